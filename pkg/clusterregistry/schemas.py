"""Every message clusterregistry puts on NATS, as msgspec Structs, in one module.

Consumers decode with these types too, so a field renamed here is renamed
for everyone. Rules: JSON on the wire (readable with `nats sub`); new fields
get defaults; decoders ignore unknown fields, so an older consumer keeps
working when a newer relay adds one. Messages carry an object's relevant
state, not a diff (level-based), and never secrets or env values.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# ADDED, MODIFIED, DELETED are watch events; SYNC is an object (re)published by a relist,
# between that relist's begin and end markers.
EventType = Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]
Kind = Literal["pod", "replicaset", "job", "daemonset", "statefulset", "artifact"]


class OwnerRef(msgspec.Struct, frozen=True, kw_only=True):
    """The controller owner reference of an object (ownerReferences[controller=true])."""

    kind: str
    name: str
    uid: str
    api_version: str = msgspec.field(default="", name="apiVersion")


class Container(msgspec.Struct, frozen=True, kw_only=True):
    """A container as consumers need it: its image, and what it was before the webhook."""

    name: str
    image: str
    # the reference before the webhook rewrote it (clusterregistry.io/original-images)
    original_image: str = msgspec.field(default="", name="originalImage")
    # what the kubelet resolved (containerStatuses[].imageID): a digest, once pulled
    image_id: str = msgspec.field(default="", name="imageID")


class PodState(msgspec.Struct, frozen=True, kw_only=True):
    containers: list[Container] = msgspec.field(default_factory=list)
    init_containers: list[Container] = msgspec.field(default_factory=list,
                                                     name="initContainers")
    ephemeral_containers: list[Container] = msgspec.field(default_factory=list,
                                                          name="ephemeralContainers")
    image_pull_secrets: list[str] = msgspec.field(default_factory=list,
                                                  name="imagePullSecrets")
    phase: str = ""
    node_name: str = msgspec.field(default="", name="nodeName")
    deletion_timestamp: str = msgspec.field(default="", name="deletionTimestamp")


class TemplateState(msgspec.Struct, frozen=True, kw_only=True):
    """An owner's pod template: how early loading learns images before any pod exists."""

    containers: list[Container] = msgspec.field(default_factory=list)
    init_containers: list[Container] = msgspec.field(default_factory=list,
                                                     name="initContainers")
    image_pull_secrets: list[str] = msgspec.field(default_factory=list,
                                                  name="imagePullSecrets")
    replicas: int | None = None


class ArtifactState(msgspec.Struct, frozen=True, kw_only=True):
    """An Artifact's spec and status, as the API server holds them (schema: reconciler)."""

    spec: dict[str, object] = msgspec.field(default_factory=dict)
    status: dict[str, object] = msgspec.field(default_factory=dict)


class KubeEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One change of one object: subject `clusterregistry.kube.<kind>.<namespace>.<uid>`."""

    type: EventType
    kind: Kind
    namespace: str
    name: str
    uid: str
    resource_version: str = msgspec.field(name="resourceVersion")
    owner: OwnerRef | None = None
    pod: PodState | None = None
    template: TemplateState | None = None
    artifact: ArtifactState | None = None
    # set on SYNC events: the relist this object belongs to
    relist: str = ""
    # the object's state did not fit in a message (NATS max payload): consumers must not
    # conclude anything from the missing containers (e.g. that an image is unreferenced)
    oversized: bool = False


class RelistMarker(msgspec.Struct, frozen=True, kw_only=True):
    """Brackets a relist: subject `clusterregistry.kube.<kind>._relist`.

    Between `begin` and `end` of one relist id, the relay publishes a SYNC event for
    every live object of the kind. A consumer that saw the end marker knows that any
    object it holds of that kind, not seen in that relist and not changed after the
    relist's resourceVersion, no longer exists, even if its DELETED event was missed.
    """

    kind: Kind
    phase: Literal["begin", "end"]
    relist: str
    resource_version: str = msgspec.field(name="resourceVersion")
    count: int = 0


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """The relay's resume point for one kind (KV bucket `clusterregistry-relay`)."""

    kind: Kind
    resource_version: str = msgspec.field(name="resourceVersion")
    updated: float = 0.0


# -- tracker: KV `clusterregistry-refs`, key = owner uid ---------------------------------------

OwnerKind = Literal["Pod", "ReplicaSet", "Job", "DaemonSet", "StatefulSet"]


class SecretRef(msgspec.Struct, frozen=True, kw_only=True):
    """A `kubernetes.io/dockerconfigjson` secret a mirror may use for a source image."""

    namespace: str
    name: str


class OwnerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """Which source images one owner uses (a pod's controller, or a bare pod).

    `images` are canonical source references (`references.canonical`): the original
    from the webhook's annotation, or the image itself when it was not rewritten.
    GC treats an image as referenced while any record lists it.
    """

    uid: str
    kind: OwnerKind
    namespace: str
    name: str
    images: list[str] = msgspec.field(default_factory=list)
    pull_secrets: list[str] = msgspec.field(default_factory=list, name="pullSecrets")
    resource_version: str = msgspec.field(default="", name="resourceVersion")
    updated: float = 0.0
    # the newest resourceVersion of any event that contributed (the owner's or one of its
    # pods'): a relist at or after it that does not mention the owner proves it gone
    observed_resource_version: str = msgspec.field(default="",
                                                   name="observedResourceVersion")
    # the last relist (the relay's id) that listed the owner itself (its own SYNC event, not
    # a pod's), and that SYNC message's stream sequence: the memory of relists that every
    # tracker replica shares, since each replica sees only part of a relist's events
    relist: str = ""
    relist_sequence: int = msgspec.field(default=0, name="relistSequence")


# -- reconciler: KV `clusterregistry-artifacts`, key = Artifact name ----------------------------

ArtifactPhase = Literal["Pending", "Mirroring", "Available", "Failed", "Deleting"]


class ArtifactRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the local registry holds for one source image, for the webhook and GC.

    The webhook's IfAvailable policy rewrites only sources whose record is `Available`.
    """

    name: str
    source: str
    local: str
    phase: ArtifactPhase
    digest: str = ""
    size: int = 0
    platforms: list[str] = msgspec.field(default_factory=list)
    references: int = 0
    # when the last reference ended (0 while referenced): GC's grace period counts from here
    unreferenced_since: float = msgspec.field(default=0.0, name="unreferencedSince")
    generation: int = 0
    updated: float = 0.0


# -- mirror: work queue `CLUSTERREGISTRY_MIRROR` ------------------------------------------------


class MirrorRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Copy one source image into the local registry: subject `clusterregistry.mirror.request`.

    `Nats-Msg-Id` is `subjects.mirror_msg_id(artifact, generation, attempt)`, so a
    reconciler that asks twice for the same copy puts one request on the queue.
    """

    artifact: str
    generation: int
    source: str
    destination: str
    pull_secrets: list[SecretRef] = msgspec.field(default_factory=list, name="pullSecrets")
    # empty: every platform of an index
    platforms: list[str] = msgspec.field(default_factory=list)
    attempt: int = 0
    requested: float = 0.0
    trace_id: str = msgspec.field(default="", name="traceId")
    # the Artifact's uid, so the mirror's Events name the very object (kubectl describe
    # selects on it) without a right to read Artifacts; empty from an older reconciler
    artifact_uid: str = msgspec.field(default="", name="artifactUid")


class MirrorResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one request: subject `clusterregistry.mirror.result.<artifact>`."""

    artifact: str
    generation: int
    source: str
    destination: str
    ok: bool
    digest: str = ""
    size: int = 0
    platforms: list[str] = msgspec.field(default_factory=list)
    bytes_copied: int = msgspec.field(default=0, name="bytesCopied")
    blobs_copied: int = msgspec.field(default=0, name="blobsCopied")
    blobs_skipped: int = msgspec.field(default=0, name="blobsSkipped")
    blobs_mounted: int = msgspec.field(default=0, name="blobsMounted")
    duration_seconds: float = msgspec.field(default=0.0, name="durationSeconds")
    # on failure: a message without credentials, a short machine reason, and whether a
    # later attempt may succeed (network, 5xx) or not (unknown manifest, schema 1)
    error: str = ""
    reason: str = ""
    retryable: bool = True
    attempt: int = 0
    worker: str = ""
    trace_id: str = msgspec.field(default="", name="traceId")


class MirrorProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A copy running now: subject `clusterregistry.mirror.progress.<artifact>`.

    Core NATS, not JetStream: nothing stores it, and a lost one is harmless (the next
    replaces it; the outcome is the MirrorResult). `bytesTotal` is the blob bytes the
    manifests name (known once they are read), `bytesDone` those copied, mounted or
    already there; `time` is when the worker measured them (Unix seconds).
    """

    artifact: str
    generation: int
    bytes_done: int = msgspec.field(name="bytesDone")
    bytes_total: int = msgspec.field(name="bytesTotal")
    blobs_done: int = msgspec.field(default=0, name="blobsDone")
    blobs_total: int = msgspec.field(default=0, name="blobsTotal")
    attempt: int = 0
    worker: str = ""
    time: float = 0.0


class BlobLocation(msgspec.Struct, frozen=True, kw_only=True):
    """KV `clusterregistry-mirror-blobs`: a blob in the local registry, or one being uploaded.

    A hint for mounts between workers, never trusted for correctness: a mount that
    fails falls back to an upload, and a claim older than its deadline is taken over.
    """

    state: Literal["claimed", "stored"]
    repository: str = ""
    holder: str = ""
    updated: float = 0.0


class FlightClaim(msgspec.Struct, frozen=True, kw_only=True):
    """KV `clusterregistry-front-flights`: one front fetching a blob or manifest from a source.

    `peer` is the URL where the holder serves what it has fetched so far; the holder
    renews `updated` while it fetches, and leaves `stored` behind once the blob is in
    the registry (the bucket's TTL forgets it), so a late replica looks there first.
    """

    state: Literal["fetching", "stored"]
    holder: str
    peer: str = ""
    updated: float = 0.0


# -- gc: `clusterregistry.gc.<event>`, and the registry fence in KV `clusterregistry-gc` --------

GcEventType = Literal["started", "artifact_deleted", "swept", "finished", "failed", "skipped"]


class GcEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One step of one GC run; `event` is also the subject's last token."""

    run: str
    event: GcEventType
    dry_run: bool = msgspec.field(default=False, name="dryRun")
    artifact: str = ""
    source: str = ""
    deleted: int = 0
    bytes_freed: int = msgspec.field(default=0, name="bytesFreed")
    usage_percent: float = msgspec.field(default=0.0, name="usagePercent")
    read_only_seconds: float = msgspec.field(default=0.0, name="readOnlySeconds")
    duration_seconds: float = msgspec.field(default=0.0, name="durationSeconds")
    message: str = ""
    time: float = 0.0


class GcRunRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Ask a running GC for a run now: subject `clusterregistry.control.gc.run` (request-reply;
    the reply is the run's last GcEvent: finished, skipped or failed)."""

    dry_run: bool = msgspec.field(default=False, name="dryRun")
    # collect even below the threshold
    force: bool = False
    requested_by: str = msgspec.field(default="", name="requestedBy")


class ReleasedTag(msgspec.Struct, frozen=True, kw_only=True):
    """A tag GC left in the local registry: its Artifact was collected, but the manifest it
    names stayed because a live image has it too, and distribution 2.8 cannot delete a tag
    on its own (only a manifest by digest, which untags every tag naming it). Bucket
    `subjects.GC_TAGS_BUCKET`, key `subjects.released_tag_key(repository, tag)`; while the
    tag still names `digest`, GC counts it as nobody's, so the manifest goes with the last
    image that needs it."""

    repository: str
    tag: str
    digest: str
    artifact: str = ""
    released: float = 0.0


class FenceEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A holder of the registry fence: GC's exclusive lock, or one mirror write in flight."""

    holder: str
    purpose: str = ""
    acquired: float = 0.0
    renewed: float = 0.0


_json_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _json_encoder.encode(message)


kube_event_decoder = msgspec.json.Decoder(KubeEvent)
relist_marker_decoder = msgspec.json.Decoder(RelistMarker)
checkpoint_decoder = msgspec.json.Decoder(Checkpoint)
owner_record_decoder = msgspec.json.Decoder(OwnerRecord)
artifact_record_decoder = msgspec.json.Decoder(ArtifactRecord)
mirror_request_decoder = msgspec.json.Decoder(MirrorRequest)
mirror_result_decoder = msgspec.json.Decoder(MirrorResult)
mirror_progress_decoder = msgspec.json.Decoder(MirrorProgress)
gc_event_decoder = msgspec.json.Decoder(GcEvent)
fence_entry_decoder = msgspec.json.Decoder(FenceEntry)
released_tag_decoder = msgspec.json.Decoder(ReleasedTag)
flight_claim_decoder = msgspec.json.Decoder(FlightClaim)
gc_run_request_decoder = msgspec.json.Decoder(GcRunRequest)
blob_location_decoder = msgspec.json.Decoder(BlobLocation)
