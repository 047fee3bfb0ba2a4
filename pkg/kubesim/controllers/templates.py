"""Pod template hashing and the names controllers derive from it.

kube names a Deployment's ReplicaSets `<deployment>-<pod-template-hash>` and
labels StatefulSet/DaemonSet pods with a controller-revision-hash; both come
from controller.ComputeHash: FNV-32a over the template (plus the collision
count, when there is one, as 8 little-endian bytes), printed in decimal and
re-encoded with rand.SafeEncodeString's alphabet (no vowels, no 0/1/3, so no
accidental words). kube feeds the hasher a spew dump of the Go struct;
kubesim feeds it canonical JSON instead, so hashes are stable and
well-formed but not byte-identical to a real cluster's.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from kubesim.controllers.objects import deep_copy

# rand.alphanums (k8s.io/apimachinery/pkg/util/rand)
SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

POD_TEMPLATE_HASH = "pod-template-hash"
CONTROLLER_REVISION_HASH = "controller-revision-hash"

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv32a(data: bytes, start: int = _FNV32_OFFSET) -> int:
    value = start
    for byte in data:
        value ^= byte
        value = (value * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """rand.SafeEncodeString: map each character onto the safe alphabet."""
    return "".join(SAFE_ALPHANUMS[ord(ch) % len(SAFE_ALPHANUMS)] for ch in text)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """controller.ComputeHash over a pod template (JSON form)."""
    value = fnv32a(canonical_json(template))
    if collision_count is not None:
        # binary.LittleEndian.PutUint32 into an 8-byte slice: 4 bytes + 4 zeros.
        value = fnv32a(struct.pack("<I", collision_count & 0xFFFFFFFF) + b"\0" * 4, value)
    return safe_encode(str(value))


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a pod template minus the pod-template-hash label (EqualIgnoreHash)."""
    metadata = dict(template.get("metadata") or {})
    labels = dict(metadata.get("labels") or {})
    labels.pop(POD_TEMPLATE_HASH, None)
    if labels:
        metadata["labels"] = labels
    else:
        metadata.pop("labels", None)
    out = dict(template)
    if metadata:
        out["metadata"] = metadata
    else:
        out.pop("metadata", None)
    return out


def templates_equal_ignoring_hash(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return canonical_json(template_without_hash(a)) == canonical_json(template_without_hash(b))


# apiserver names are DNS subdomains (253) but pod names become hostnames: kube
# caps generateName prefixes so prefix + 5 random characters fit 63.
MAX_GENERATED_PREFIX = 58


def generate_name_prefix(owner_name: str) -> str:
    """names.SimpleNameGenerator's input: `<owner>-`, truncated to leave room for 5 chars."""
    prefix = f"{owner_name}-"
    if len(prefix) > MAX_GENERATED_PREFIX:
        prefix = prefix[:MAX_GENERATED_PREFIX]
    return prefix


def pod_from_template(
    template: Mapping[str, Any],
    *,
    namespace: str,
    owner_ref: dict[str, Any],
    generate_name: str | None = None,
    name: str | None = None,
    extra_labels: Mapping[str, str] | None = None,
    extra_annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """controller.GetPodFromTemplate: a Pod for `api.create` from a workload's template."""
    source = deep_copy(template)
    template_meta = source.get("metadata") or {}
    metadata: dict[str, Any] = {"namespace": namespace, "ownerReferences": [owner_ref]}
    if name is not None:
        metadata["name"] = name
    elif generate_name is not None:
        metadata["generateName"] = generate_name
    labels = dict(template_meta.get("labels") or {})
    labels.update(extra_labels or {})
    if labels:
        metadata["labels"] = labels
    annotations = dict(template_meta.get("annotations") or {})
    annotations.update(extra_annotations or {})
    if annotations:
        metadata["annotations"] = annotations
    if template_meta.get("finalizers"):
        metadata["finalizers"] = list(template_meta["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": source.get("spec") or {},
    }
