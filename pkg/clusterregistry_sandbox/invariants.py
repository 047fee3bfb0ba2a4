"""The soak's invariants as pure decisions: given what was read, what is a violation.

The soak (`soaking`) reads the system (the API server, distribution's own API and
storage, the JetStream stream, the artifact store's access log) and hands what it
read to these functions, which do no I/O, so each rule can be tested on its own:

1. `manifest_links` and `digest_of`: an image is whole when its manifest and every
   manifest and blob it names read back with the digest they are named by.
2. `lost_by_live_owner`: an Artifact deleted while an owner that uses its image was
   live before the deletion and is still live after it (the same uid, the same
   template) is a deletion GC must never make.
3. `registry_accounting`: after the last sweep, distribution's blobs are exactly the
   union of the Available images' manifests and blobs (shared blobs counted once).
4. `duplicate_msg_ids`: one stream message per `Nats-Msg-Id`.
5. `store_fetches` and `overfetched`: the artifact store served each blob in full at
   most once per distinct image version holding it, times one more for each time GC
   freed it from the edge registry (it may then be needed again).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "OwnerSnapshot",
    "Violation",
    "digest_of",
    "duplicate_msg_ids",
    "lost_by_live_owner",
    "manifest_links",
    "overfetched",
    "registry_accounting",
    "store_fetches",
]

# the kinds whose pod template never changes under the same uid
_IMMUTABLE_TEMPLATES = frozenset({"ReplicaSet", "Job", "Pod"})
_BLOB_GET = re.compile(
    r'"GET /v2/(?P<repo>[^ ]+?)/blobs/(?P<digest>sha256:[0-9a-f]{64})[^"]*" (?P<status>\d{3}) '
    r'(?P<size>\d+|-)')


@dataclass(frozen=True)
class Violation:
    """One broken invariant: which (`kind`), when (epoch seconds), what was seen."""

    kind: str
    time: float
    detail: str


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_links(data: bytes) -> tuple[list[str], list[tuple[str, int]]]:
    """(child manifest digests, (blob digest, size) pairs) a manifest or index names."""
    document: dict[str, Any] = json.loads(data)
    children = [str(m["digest"]) for m in document.get("manifests") or []]
    blobs: list[tuple[str, int]] = []
    config = document.get("config")
    if isinstance(config, dict) and config.get("digest"):
        blobs.append((str(config["digest"]), int(config.get("size", -1))))
    for layer in document.get("layers") or []:
        blobs.append((str(layer["digest"]), int(layer.get("size", -1))))
    return children, blobs


@dataclass(frozen=True)
class OwnerSnapshot:
    """The live owners at one moment: uid -> (kind, generation, canonical images)."""

    taken: float
    owners: Mapping[str, tuple[str, int, frozenset[str]]] = field(default_factory=dict)


def lost_by_live_owner(source: str, deleted_at: float, before: OwnerSnapshot,
                       after: OwnerSnapshot, recorded: Mapping[str, frozenset[str]]) -> list[str]:
    """The owners that used `source` all through the deletion and that the tracker had
    recorded as using it (`recorded`: uid -> images of its reference records read before
    the deletion): live in a snapshot taken before it and still live, unchanged, in one
    taken after it. A uid is never reused, and an owner whose template may change
    (DaemonSet, StatefulSet) must have kept its generation, so it used the image the whole
    time. An owner the tracker had not recorded yet is left out: until its record exists,
    GC's grace period is the only protection, by design."""
    if not before.taken <= deleted_at <= after.taken:
        return []
    out = []
    for uid, (kind, generation, images) in before.owners.items():
        if source not in images or source not in recorded.get(uid, frozenset()):
            continue
        later = after.owners.get(uid)
        if later is None or source not in later[2]:
            continue
        if kind not in _IMMUTABLE_TEMPLATES and later[1] != generation:
            continue
        out.append(f"{kind} {uid}")
    return sorted(out)


@dataclass(frozen=True)
class Accounting:
    expected_bytes: int
    stored_bytes: int
    missing: dict[str, int]  # digest -> size the Available images name, absent from storage
    excess: dict[str, int]  # digest -> size stored that no Available image names


def registry_accounting(stored: Mapping[str, int], expected: Mapping[str, int]) -> Accounting:
    """distribution's blobs (digest -> bytes on disk) against the union of what the
    Available images name (each digest once, however many images share it)."""
    return Accounting(
        expected_bytes=sum(expected.values()),
        stored_bytes=sum(stored.values()),
        missing={d: s for d, s in expected.items() if d not in stored},
        excess={d: s for d, s in stored.items() if d not in expected},
    )


def duplicate_msg_ids(msg_ids: Iterable[str]) -> dict[str, int]:
    """`Nats-Msg-Id`s carried by more than one message in the stream, with their counts."""
    return {mid: n for mid, n in Counter(msg_ids).items() if n > 1}


def store_fetches(log_text: str, sizes: Mapping[str, int]) -> Counter[str]:
    """Blob digest -> GETs the artifact store answered in full (2xx, every byte sent).

    A transfer cut short (a client killed mid-blob) sent fewer bytes than the blob holds
    and is not a fetch; a 206 (a resumed range) counts as one, erring on the strict side.
    """
    counts: Counter[str] = Counter()
    for match in _BLOB_GET.finditer(log_text):
        status = match["status"]
        if not status.startswith("2"):
            continue
        digest = match["digest"]
        sent = int(match["size"]) if match["size"] != "-" else -1
        if status == "200" and digest in sizes and sent != sizes[digest]:
            continue
        counts[digest] += 1
    return counts


def overfetched(fetches: Mapping[str, int], versions: Mapping[str, int],
                freed: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """digest -> (fetches, allowed) where the store served a blob more often than allowed:
    once per distinct image version holding it (`versions`), and again that many times for
    each time GC freed it from the edge registry (`freed`)."""
    out = {}
    for digest, count in fetches.items():
        allowed = max(1, versions.get(digest, 0)) * (1 + freed.get(digest, 0))
        if count > allowed:
            out[digest] = (count, allowed)
    return out
