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


_json_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _json_encoder.encode(message)


kube_event_decoder = msgspec.json.Decoder(KubeEvent)
relist_marker_decoder = msgspec.json.Decoder(RelistMarker)
checkpoint_decoder = msgspec.json.Decoder(Checkpoint)
