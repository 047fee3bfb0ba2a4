"""The exact end state after a scenario or a fault: what must hold, checked against everything.

"Nothing lost" is a claim about every layer at once, so after each fault the
end-to-end tests compare what the API server says (live owners, the images
in their pod templates or, for bare pods, the webhook's annotation) with:

- pods: Running (Succeeded for Jobs), every image resolved from the edge registry;
- the tracker's KV `clusterregistry-refs`: one record per live owner, its images exact;
- Artifacts: exactly one per image in use, Available, the source's digest, the
  exact owner count; the reconciler's KV `clusterregistry-artifacts` agreeing;
- the edge registry: every image there under its local name with that digest;
- the bus: no durable consumer with messages pending or unacknowledged, and
  no mirror request left in the work queue.

`problems()` returns what does not hold (empty when all does); the tests wait
until it is empty, and print the last list when it never is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import msgspec
import nats
from nats.js.errors import BucketNotFoundError, NotFoundError

from clusterregistry import kinds, references, schemas, subjects
from clusterregistry_sandbox.apiclients import ApiClient
from clusterregistry_sandbox.systems import System

__all__ = ["expected_references", "problems"]

_OWNER_KINDS = (("ReplicaSet", "ReplicaSet"), ("DaemonSet", "DaemonSet"), ("Job", "Job"),
                ("StatefulSet", "StatefulSet"))


def _template_images(obj: Mapping[str, Any]) -> set[str]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    return {references.canonical(str(c["image"])) for c in containers if c.get("image")}


def _pod_source_images(pod: Mapping[str, Any], local_registry: str) -> set[str]:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    originals = json.loads(annotations.get(kinds.ORIGINAL_IMAGES_ANNOTATION) or "{}")
    spec = pod.get("spec") or {}
    out = set()
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = originals.get(container["name"]) or container["image"]
        ref = references.parse(image)
        if references.is_local(ref, local_registry):
            ref = references.from_local(ref, local_registry)
        out.add(str(ref.with_default_tag()))
    return out


async def expected_references(api: ApiClient, namespaces: Sequence[str],
                              local_registry: str) -> dict[str, tuple[str, set[str]]]:
    """owner uid -> (kind/namespace/name, canonical source images), from the API server."""
    expected: dict[str, tuple[str, set[str]]] = {}
    for namespace in namespaces:
        for kind, _ in _OWNER_KINDS:
            for obj in await api.list(kind, namespace=namespace):
                meta = obj["metadata"]
                if meta.get("deletionTimestamp"):
                    continue
                expected[meta["uid"]] = (f"{kind}/{namespace}/{meta['name']}",
                                         _template_images(obj))
        for pod in await api.list("Pod", namespace=namespace):
            meta = pod["metadata"]
            controller = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
            if controller or meta.get("deletionTimestamp"):
                continue
            expected[meta["uid"]] = (f"Pod/{namespace}/{meta['name']}",
                                     _pod_source_images(pod, local_registry))
    return expected


async def problems(
    system: System,
    api: ApiClient,
    *,
    namespaces: Sequence[str] = ("nf",),
    digests: Mapping[str, str] | None = None,
    check_bus: bool = True,
    from_source: Collection[str] = (),
    grown: Mapping[str, Collection[str]] | None = None,
) -> list[str]:
    """Everything that is not as it must be; `digests` maps canonical sources to their digest.

    Pods labelled with an `app` in `from_source` may run from the source registry (the
    webhook was down when they were created); they must still run, and be mirrored.
    `grown` maps an owner (`Kind/namespace/name`) to images its template had before: its
    record may keep them while it lives (a record only grows, for a rollback), so it may
    hold any of those besides its template's, and they count as in use.
    """
    found: list[str] = []
    edge = system.local_registry
    want_digest = dict(digests or {
        references.canonical(s.reference): s.digest for s in system.samples})

    # pods
    for namespace in namespaces:
        for pod in await api.list("Pod", namespace=namespace):
            meta, status = pod["metadata"], pod.get("status") or {}
            if meta.get("deletionTimestamp"):
                found.append(f"pod {namespace}/{meta['name']} still terminating")
                continue
            is_job = any(o.get("kind") == "Job" for o in meta.get("ownerReferences") or [])
            want_phase = "Succeeded" if is_job else "Running"
            ids = [cs.get("imageID", "") for cs in status.get("containerStatuses") or []]
            if status.get("phase") != want_phase:
                found.append(f"pod {namespace}/{meta['name']} {status.get('phase')}")
            elif (meta.get("labels") or {}).get("app") in from_source:
                continue
            elif not ids or not all(i.startswith(edge + "/") for i in ids):
                found.append(f"pod {namespace}/{meta['name']} images {ids} not from the edge")

    expected = await expected_references(api, namespaces, edge)
    users: dict[str, int] = {}

    # the tracker's records and the reconciler's records
    client = await nats.connect(servers=system.nats_servers, connect_timeout=5,
                                allow_reconnect=False)
    try:
        js = client.jetstream()
        records: dict[str, schemas.OwnerRecord] = {}
        try:
            refs = await js.key_value(subjects.REFS_BUCKET)
            with contextlib.suppress(nats.js.errors.NoKeysError):
                for key in await refs.keys():
                    entry = await refs.get(key)
                    if entry.value:
                        records[key] = msgspec.json.decode(entry.value,
                                                           type=schemas.OwnerRecord)
        except BucketNotFoundError:
            found.append(f"no KV bucket {subjects.REFS_BUCKET}")
        nf_records = {k: r for k, r in records.items() if r.namespace in namespaces}
        for uid, (what, images) in expected.items():
            record = nf_records.get(uid)
            in_use = images
            allowed = images | set((grown or {}).get(what, ()))
            if record is None:
                if images:
                    found.append(f"no reference record for {what}")
            elif not images <= set(record.images) <= allowed:
                found.append(f"{what} references {sorted(record.images)}, uses {sorted(images)}")
            else:
                in_use = set(record.images)
            for image in in_use:
                users[image] = users.get(image, 0) + 1
        for uid, record in nf_records.items():
            if uid not in expected and record.images:
                found.append(f"reference record for gone {record.kind}/{record.namespace}/"
                             f"{record.name}: {record.images}")
        artifact_records: dict[str, schemas.ArtifactRecord] = {}
        try:
            bucket = await js.key_value(subjects.ARTIFACTS_BUCKET)
            with contextlib.suppress(nats.js.errors.NoKeysError):
                for key in await bucket.keys():
                    entry = await bucket.get(key)
                    if entry.value:
                        artifact_records[key] = msgspec.json.decode(
                            entry.value, type=schemas.ArtifactRecord)
        except BucketNotFoundError:
            found.append(f"no KV bucket {subjects.ARTIFACTS_BUCKET}")
        if check_bus:
            found += await _bus_problems(js)
    finally:
        await client.close()

    # Artifacts: one per image in use, exact
    artifacts = {a["metadata"]["name"]: a for a in await api.list("Artifact")}
    wanted_names = {references.artifact_name(references.parse(i)): i for i in users}
    for name, image in wanted_names.items():
        artifact = artifacts.get(name)
        if artifact is None:
            found.append(f"no Artifact for {image}")
            continue
        status = artifact.get("status") or {}
        count = (status.get("references") or {}).get("count")
        if status.get("phase") != "Available":
            found.append(f"Artifact {name} {status.get('phase')}: {status.get('message', '')}")
        if image in want_digest and status.get("digest") != want_digest[image]:
            found.append(f"Artifact {name} digest {status.get('digest')}, source has "
                         f"{want_digest[image]}")
        if count != users[image]:
            found.append(f"Artifact {name} counts {count} owners, {users[image]} use it")
        kept = artifact_records.get(name)
        if kept is None or kept.phase != "Available":
            found.append(f"KV artifact record for {name}: {kept and kept.phase}")
        local = references.to_local(references.parse(image), edge)
        info = await system.edge.manifest(local.path, local.tag or local.digest or "latest")
        if info is None:
            found.append(f"edge registry has no {local}")
        elif image in want_digest and info.digest != want_digest[image]:
            found.append(f"edge registry has {local} at {info.digest}")
    return found


async def _bus_problems(js: Any) -> list[str]:
    """Durable consumers with work outstanding, and mirror requests not taken."""
    found: list[str] = []
    for stream in (subjects.KUBE_STREAM, subjects.MIRROR_STREAM):
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            continue
        if stream == subjects.MIRROR_STREAM and info.state.messages:
            found.append(f"{info.state.messages} mirror requests still queued")
        for consumer in await js.consumers_info(stream):
            if consumer.config.durable_name is None:
                continue
            if consumer.num_pending or consumer.num_ack_pending:
                found.append(f"consumer {stream}/{consumer.name}: {consumer.num_pending} pending, "
                             f"{consumer.num_ack_pending} unacknowledged")
    return found
