"""Every NATS name clusterregistry uses: subjects, streams, buckets, consumers.

Spelled once, here, so a rename cannot leave a publisher and its consumer
talking past each other, and so `nats sub` users have one page to read.
Subject tokens never carry object names (names may contain dots, which
NATS treats as token separators); they carry uids, which cannot.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

PREFIX: Final = "clusterregistry"

# -- streams ------------------------------------------------------------------------------------
KUBE_STREAM: Final = "CLUSTERREGISTRY_KUBE"
MIRROR_STREAM: Final = "CLUSTERREGISTRY_MIRROR"
# GC run events (`clusterregistry.gc.*`), kept so a run can be traced afterwards
GC_STREAM: Final = "CLUSTERREGISTRY_GC"

# -- subjects -----------------------------------------------------------------------------------
KUBE_ALL: Final = f"{PREFIX}.kube.>"
MIRROR_REQUEST: Final = f"{PREFIX}.mirror.request"
MIRROR_RESULT_ALL: Final = f"{PREFIX}.mirror.result.*"
GC_ALL: Final = f"{PREFIX}.gc.>"
# CLUSTERREGISTRY_MIRROR holds requests and results: a work queue (a message is removed when
# acked) whose two consumers filter disjoint subjects, the mirror workers on requests and the
# reconcilers on results. Whoever creates the stream first creates it with both.
MIRROR_STREAM_SUBJECTS: Final = (MIRROR_REQUEST, MIRROR_RESULT_ALL)
# a running copy's bytes done / total, every few seconds: core NATS, in no stream (no
# CLUSTERREGISTRY_* stream's subjects capture it). Progress is ephemeral: a lost one is
# replaced by the next, and the durable outcome is the MirrorResult; storing them would
# only fill the work queue with messages nobody acks.
MIRROR_PROGRESS_ALL: Final = f"{PREFIX}.mirror.progress.*"

# the kinds the relay publishes, lower-case singular as they appear in subjects
KINDS: Final = ("pod", "replicaset", "job", "daemonset", "statefulset", "artifact")
CLUSTER_SCOPED: Final = "_"

# -- key-value buckets --------------------------------------------------------------------------
REFS_BUCKET: Final = "clusterregistry-refs"
ARTIFACTS_BUCKET: Final = "clusterregistry-artifacts"
# the relay's per-kind resume points
RELAY_BUCKET: Final = "clusterregistry-relay"
RELAY_LEASE: Final = "clusterregistry-relay"  # coordination.k8s.io Lease name
# the registry fence: key `FENCE_LOCK` is GC's exclusive lock, `writing.<id>` one mirror write
# in flight; entries expire with the bucket's TTL, so a dead holder cannot keep the registry
GC_BUCKET: Final = "clusterregistry-gc"
FENCE_LOCK: Final = "lock"
FENCE_WRITER_PREFIX: Final = "writing"
# where the local registry holds each blob (key `sha256.<hex>`), so mirror workers mount a
# blob another worker uploaded instead of uploading it again; a hint with a TTL
MIRROR_BLOBS_BUCKET: Final = "clusterregistry-mirror-blobs"
# set by the registry's supervisor once it runs read-only for the lock (gc readOnlyMode follower)
FENCE_READ_ONLY: Final = "readonly"
# registry fronts: `front.<id>` says a front is alive, `readonly.<id>` that it refuses writes
FENCE_FRONT_PREFIX: Final = "front"
# tags GC left in the local registry (their Artifact collected, the manifest kept for a live
# image; distribution 2.8 deletes no tag alone), so a later run may delete that manifest once
# nothing live needs it: key `tag.<sha256 hex of repository:tag>` (`released_tag_key`)
GC_TAGS_BUCKET: Final = "clusterregistry-gc-tags"
# the fronts' single flights across replicas: `blob.<algo>.<hex>`, `manifest.<hash>`
FRONT_FLIGHTS_BUCKET: Final = "clusterregistry-front-flights"
# HTTP headers of the front's protocol: the mirror asks for a tag as the source has it (not
# as the registry holds it); a replica asks a peer for the fetch it holds
FRONT_SOURCE_VIEW_HEADER: Final = "X-Clusterregistry-Source-View"
FRONT_PEER_HEADER: Final = "X-Clusterregistry-Front"

# -- durable consumers --------------------------------------------------------------------------
TRACKER_CONSUMER: Final = "clusterregistry-tracker"
RECONCILER_ARTIFACTS_CONSUMER: Final = "clusterregistry-reconciler-artifacts"
RECONCILER_RESULTS_CONSUMER: Final = "clusterregistry-reconciler-results"
MIRROR_CONSUMER: Final = "clusterregistry-mirror"
# `clusterregistry trace`'s ephemeral consumers: this prefix and a random suffix each
TRACE_CONSUMER_PREFIX: Final = "clusterregistry-trace-"
# request-reply: ask the GC process for a run now (`clusterregistry gc run-once` over NATS)
GC_RUN_REQUEST: Final = f"{PREFIX}.control.gc.run"
# the GC replicas' queue group on GC_RUN_REQUEST: each request reaches exactly one
GC_QUEUE_GROUP: Final = "clusterregistry-gc"

# the reconciler replicas' queue group on MIRROR_PROGRESS_ALL: each progress message reaches
# one of them, as each result does through their shared durable consumer
RECONCILER_PROGRESS_QUEUE: Final = "clusterregistry-reconciler-progress"

# -- headers ------------------------------------------------------------------------------------
MSG_ID_HEADER: Final = "Nats-Msg-Id"
TRACE_HEADER: Final = "Clusterregistry-Trace-Id"


# what would split a subject into more tokens, or make it a wildcard
_NOT_IN_TOKEN = re.compile(r"[.*> \t\r\n]")


def _token(value: str, what: str) -> str:
    if not value or _NOT_IN_TOKEN.search(value):
        raise ValueError(f"{what} {value!r} cannot be a NATS subject token")
    return value


def kube(kind: str, namespace: str | None, uid: str) -> str:
    """`clusterregistry.kube.<kind>.<namespace>.<uid>`; `_` for cluster-scoped objects."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{PREFIX}.kube.{kind}.{_token(namespace or CLUSTER_SCOPED, 'namespace')}." + _token(
        uid, "uid"
    )


def relist(kind: str) -> str:
    """Relist markers of one kind: `clusterregistry.kube.<kind>._relist`.

    Four tokens where object subjects have five, so `clusterregistry.kube.<kind>.>`
    carries both, in order, and no namespace (a DNS label: no `_`) can collide.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return f"{PREFIX}.kube.{kind}._relist"


def kube_kind(kind: str) -> str:
    """Every event of one kind: `clusterregistry.kube.<kind>.>`."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    return f"{PREFIX}.kube.{kind}.>"


def mirror_result(artifact_name: str) -> str:
    return f"{PREFIX}.mirror.result.{_token(artifact_name, 'artifact name')}"


def mirror_progress(artifact_name: str) -> str:
    """`clusterregistry.mirror.progress.<artifact>`: one running copy's progress (core NATS)."""
    return f"{PREFIX}.mirror.progress.{_token(artifact_name, 'artifact name')}"


def gc(event: str) -> str:
    return f"{PREFIX}.gc.{_token(event, 'gc event')}"


def msg_id(uid: str, resource_version: str, event_type: str, relist_id: str = "") -> str:
    """`Nats-Msg-Id` for a relayed event: JetStream drops a second publish of the same id.

    A SYNC event carries its relist id too: the same unchanged object must reach the
    stream again in every relist, or a consumer would think it gone.
    """
    base = f"{uid}:{resource_version}:{event_type}"
    return f"{base}:{relist_id}" if relist_id else base


def relist_msg_id(kind: str, relist_id: str, phase: str) -> str:
    return f"relist:{kind}:{relist_id}:{phase}"


def mirror_msg_id(artifact_name: str, generation: int, attempt: int = 0) -> str:
    """`Nats-Msg-Id` of a mirror request: one queued copy per artifact, generation, attempt."""
    return f"mirror:{artifact_name}:{generation}:{attempt}"


def fence_front(front_id: str) -> str:
    """The fence key saying that one registry front is alive."""
    return f"{FENCE_FRONT_PREFIX}.{_token(front_id, 'front id')}"


def fence_front_read_only(front_id: str) -> str:
    """The fence key of one front's acknowledgement that it refuses writes."""
    return f"{FENCE_READ_ONLY}.{_token(front_id, 'front id')}"


def flight_key(kind: str, name: str) -> str:
    """The front-flights key of one fetch: `blob.sha256.<hex>` or `manifest.<sha256 hex>`."""
    return f"{kind}.{name.replace(':', '.', 1)}"


def released_tag_key(repository: str, tag: str) -> str:
    """The GC tags bucket's key of one tag left behind: repository paths hold `/` and tags `.`,
    so the key is a hash; the value names both."""
    return "tag." + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest()


def fence_writer(writer_id: str) -> str:
    """The fence key of one mirror write in flight."""
    return f"{FENCE_WRITER_PREFIX}.{_token(writer_id, 'writer id')}"
