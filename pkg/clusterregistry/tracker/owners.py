"""Which owner uses which images: the tracker's pure rules, no I/O.

`handle(event, stored)` decides what one relayed event means for the KV
record of the owner it concerns; `relist_end` and `dereferenced` apply the
relay's relist markers from what the records themselves remember: every
record notes the last relist that listed its owner, because the replicas
sharing the tracker's consumer each see only part of a relist, so no process
holds a relist's whole list. (`tests/world/inventories.py` states the same
rule for one reader that sees the whole stream: the tests' oracle.)

The rules (DESIGN.md, "Owner-based references"):

- A pod's images count for its controller owner when that is a ReplicaSet,
  Job, DaemonSet or StatefulSet; any other pod owns its own images (kind Pod).
- Images are the webhook's originals (the annotation), else the image
  itself; a reference to the local registry that was not annotated maps
  back to its source. All are canonical (`references.canonical`).
- An owner's record only grows while the owner lives: a pod deleted,
  evicted, failed or rescheduled removes nothing, and neither does a
  template change (the old pods may come back, a rollback needs the old
  image); the owner's DELETED event, or a relist that no longer lists it,
  deletes the record. A deleted record leaves a tombstone, so a late pod
  event of a deleted owner (cascading deletion reaches the pods after the
  ReplicaSet) cannot bring it back.
- Owners' pod templates count when early loading is on (images are
  mirrored before any pod exists); without it, once a pod of the owner
  appeared.
- Messages are facts about one object at one resourceVersion; an owner
  event older than the one the record holds is stale and ignored, and every
  other change is a union, so redelivery, replays and replicas applying
  events out of stream order change nothing (a skipped older template is a
  state the owner already left, which a watch may skip anyway).
- An owner's own SYNC event marks its record with the relist's id and the
  message's stream sequence, whatever else it means (stale, oversized, an
  owner with no record yet: then an empty record, so the relist's end knows
  the owner exists). The mark only moves forward in the stream, so a late
  SYNC of an older relist cannot undo a newer one's.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from clusterregistry import references
from clusterregistry.schemas import Container, KubeEvent, OwnerKind, OwnerRecord, RelistMarker

log = logging.getLogger(__name__)

# relayed kind -> the owner kind its records have
OWNER_KINDS: Final[dict[str, OwnerKind]] = {
    "replicaset": "ReplicaSet", "job": "Job", "daemonset": "DaemonSet",
    "statefulset": "StatefulSet", "pod": "Pod",
}
# controller kinds whose pods' images count for the controller
CONTROLLERS: Final[frozenset[str]] = frozenset(
    {"ReplicaSet", "Job", "DaemonSet", "StatefulSet"})


def rv(value: str) -> int:
    """resourceVersions are opaque in general; kube-apiserver's (etcd revisions) and
    kubesim's are integers, which ordering them relies on."""
    try:
        return int(value)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class Stored:
    """The KV state of one owner: its record, or a tombstone, or nothing."""

    record: OwnerRecord | None = None
    deleted: bool = False


NOTHING: Final = Stored()
TOMBSTONE: Final = Stored(deleted=True)

SkipReason = Literal["unchanged", "stale", "owner-deleted", "pod-deleted", "oversized",
                     "terminating", "no-pod-yet", "not-tracked"]


@dataclass(frozen=True, slots=True)
class Write:
    record: OwnerRecord


@dataclass(frozen=True, slots=True)
class Delete:
    uid: str


@dataclass(frozen=True, slots=True)
class Skip:
    reason: SkipReason


Outcome = Write | Delete | Skip


@dataclass(frozen=True, slots=True)
class OwnerKey:
    """The record an event concerns."""

    uid: str
    kind: OwnerKind
    namespace: str
    name: str


def owner_of(event: KubeEvent) -> OwnerKey | None:
    """The owner whose record `event` concerns; None for kinds the tracker ignores."""
    if event.kind == "pod":
        owner = event.owner
        if owner is not None and owner.kind in CONTROLLERS and owner.uid:
            return OwnerKey(owner.uid, owner.kind, event.namespace,  # type: ignore[arg-type]
                            owner.name)
        return OwnerKey(event.uid, "Pod", event.namespace, event.name)
    kind = OWNER_KINDS.get(event.kind)
    if kind is None:
        return None
    return OwnerKey(event.uid, kind, event.namespace, event.name)


@dataclass(frozen=True, slots=True)
class Settings:
    early_loading: bool = False
    local_registry: str = ""


def source_image(container: Container, *, local_registry: str) -> str | None:
    """The canonical source reference a container uses; None (logged) when it is invalid."""
    if container.original_image:
        return _canonical(container.original_image, "")
    return _canonical(container.image, local_registry)


@functools.lru_cache(maxsize=65536)
def _canonical(text: str, local_registry: str) -> str | None:
    # memoised: 100,000 pods name a few hundred distinct images, and parsing is the
    # tracker's largest cost per event; an invalid one is logged once, not per pod
    try:
        parsed = references.parse(text)
        if local_registry and references.is_local(parsed, local_registry):
            parsed = references.from_local(parsed, local_registry)
        return str(parsed.with_default_tag())
    except references.InvalidReferenceError as exc:
        log.warning("image %r is not a valid reference (%s); not tracked", text, exc)
        return None


def images_of(event: KubeEvent, *, local_registry: str) -> tuple[set[str], set[str]]:
    """(canonical images, pull secret names) an event's state names."""
    containers: list[Container] = []
    secrets: list[str] = []
    if event.pod is not None:
        containers = [*event.pod.init_containers, *event.pod.containers,
                      *event.pod.ephemeral_containers]
        secrets = event.pod.image_pull_secrets
    elif event.template is not None:
        containers = [*event.template.init_containers, *event.template.containers]
        secrets = event.template.image_pull_secrets
    images = {image for c in containers
              if (image := source_image(c, local_registry=local_registry)) is not None}
    return images, set(secrets)


def handle(event: KubeEvent, stored: Stored, settings: Settings, *, now: float,
           sequence: int = 0) -> Outcome:
    """What `event` (stream sequence `sequence`) means for the record `stored` of the owner
    it concerns."""
    outcome = _decide(event, stored, settings, now=now)
    key = owner_of(event)
    if (key is None or key.uid != event.uid or event.type != "SYNC" or not event.relist
            or stored.deleted or isinstance(outcome, Delete)):
        return outcome
    record = stored.record
    if record is not None and (record.relist == event.relist
                               or sequence <= record.relist_sequence):
        return outcome  # already marked, or a newer relist's SYNC got here first
    if isinstance(outcome, Write):
        base = outcome.record
    elif record is not None:
        base = msgspec.structs.replace(record, updated=now)
    else:
        # listed, but nothing it uses counts yet (no pod without early loading, oversized):
        # an empty record, or the relist's end could not tell it from an owner that is gone
        base = OwnerRecord(uid=key.uid, kind=key.kind, namespace=key.namespace,
                           name=key.name, resource_version=event.resource_version,
                           updated=now, observed_resource_version=event.resource_version)
    return Write(msgspec.structs.replace(base, relist=event.relist, relist_sequence=sequence))


def _decide(event: KubeEvent, stored: Stored, settings: Settings, *, now: float) -> Outcome:
    key = owner_of(event)
    if key is None:
        return Skip("not-tracked")
    own_event = key.uid == event.uid  # the owner itself (an owner kind, or a bare pod)
    if stored.deleted:
        return Skip("owner-deleted")
    if event.type == "DELETED":
        if own_event:
            return Delete(key.uid)
        return Skip("pod-deleted")  # a controller's pod: the controller decides
    record = stored.record
    if own_event and record is not None and rv(event.resource_version) < rv(
            record.resource_version):
        return Skip("stale")
    if event.oversized:
        return Skip("oversized")  # its state is unknown: conclude nothing
    if event.pod is not None and event.pod.deletion_timestamp:
        # what a terminating pod runs was added while it lived; and it may be the last word
        # of an owner already deleted (cascading deletion reaches pods after their owner)
        return Skip("terminating")
    if not record_images(record) and event.kind != "pod" and not settings.early_loading:
        # (an empty record is one a relist created: the owner listed, no pod yet)
        return Skip("no-pod-yet")
    images, secrets = images_of(event, local_registry=settings.local_registry)
    old_images = set(record.images) if record else set()
    old_secrets = set(record.pull_secrets) if record else set()
    new_images, new_secrets = old_images | images, old_secrets | secrets
    if record is not None and new_images == old_images and new_secrets == old_secrets:
        return Skip("unchanged")
    observed = max(rv(event.resource_version), rv(record.observed_resource_version)
                   if record else 0)
    owner_rv = event.resource_version if own_event else (record.resource_version
                                                         if record else "")
    return Write(OwnerRecord(
        uid=key.uid, kind=key.kind, namespace=key.namespace, name=key.name,
        images=sorted(new_images), pull_secrets=sorted(new_secrets),
        resource_version=owner_rv, updated=now, observed_resource_version=str(observed),
        relist=record.relist if record else "",
        relist_sequence=record.relist_sequence if record else 0))


def record_images(record: OwnerRecord | None) -> list[str]:
    return record.images if record is not None else []


# -- relists ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelistEnd:
    """A completed relist: records of `owner_kind` it did not mark may be gone."""

    owner_kind: OwnerKind
    relist: str
    resource_version: int
    sequence: int  # the end marker's stream sequence


def relist_end(marker: RelistMarker, *, sequence: int) -> RelistEnd | None:
    """What a marker lets the tracker conclude: an end marker, something; a begin, nothing
    (the records' marks are the relist's state; an interrupted relist never ends, and the
    next complete one concludes from its own marks)."""
    kind = OWNER_KINDS.get(marker.kind)
    if marker.phase != "end" or kind is None:
        return None
    return RelistEnd(kind, marker.relist, rv(marker.resource_version), sequence)


def dereferenced(end: RelistEnd, records: dict[str, OwnerRecord]) -> list[str]:
    """The owners a completed relist proves gone, given every record as it stands once every
    message before the end marker is applied: of its kind, not marked by it, not marked by
    anything after its end (a newer relist, or a stream recreated with smaller sequences:
    keep, conclude nothing), and not changed after the relist's resourceVersion (an owner
    created later cannot be in it)."""
    return sorted(
        uid for uid, record in records.items()
        if record.kind == end.owner_kind and record.relist != end.relist
        and record.relist_sequence < end.sequence
        and max(rv(record.observed_resource_version), rv(record.resource_version))
        <= end.resource_version
    )
