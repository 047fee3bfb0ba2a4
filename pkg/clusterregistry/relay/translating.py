"""Kubernetes objects to wire messages: the relay's pure logic, no I/O.

`translate` decides what consumers learn about an object; `message` turns
that into subject, payload and headers, including what happens when the
result would not fit in a NATS message.
"""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

import msgspec

from clusterregistry import schemas, subjects
from clusterregistry.bus.publishing import Outgoing
from clusterregistry.kinds import ORIGINAL_IMAGES_ANNOTATION
from clusterregistry.kube import objects

log = logging.getLogger(__name__)

# room for the headers and the protocol line within max_payload
_HEADROOM = 1024

# the partial view each kind's objects are decoded into; every owner kind is a Workload
_VIEWS: dict[str, type[objects.KubeObject]] = {
    "pod": objects.Pod, "artifact": objects.Artifact}
_decoders: dict[type[objects.KubeObject], msgspec.json.Decoder[objects.KubeObject]] = {
    view: msgspec.json.Decoder(view) for view in (objects.Pod, objects.Artifact,
                                                   objects.Workload)}
_originals_decoder = msgspec.json.Decoder(dict[str, str])


def object_type(kind: str) -> type[objects.KubeObject]:
    """The partial view a kind's objects are decoded into."""
    return _VIEWS.get(kind, objects.Workload)


def decode(kind: str, raw: bytes) -> objects.KubeObject:
    return _decoders[object_type(kind)].decode(raw)


def _originals(meta: objects.ObjectMeta) -> dict[str, str]:
    raw = meta.annotations.get(ORIGINAL_IMAGES_ANNOTATION)
    if not raw:
        return {}
    try:
        return _originals_decoder.decode(raw)
    except msgspec.DecodeError:
        log.warning("pod %s/%s: annotation %s is not a JSON object of strings; ignored",
                    meta.namespace, meta.name, ORIGINAL_IMAGES_ANNOTATION)
        return {}


def _containers(
    specs: list[objects.ContainerSpec],
    *,
    originals: dict[str, str],
    statuses: list[objects.ContainerStatus] = (),  # type: ignore[assignment]
) -> list[schemas.Container]:
    image_ids = {s.name: s.imageID for s in statuses if s.imageID}
    return [
        schemas.Container(name=c.name, image=c.image, original_image=originals.get(c.name, ""),
                          image_id=image_ids.get(c.name, ""))
        for c in specs
    ]


def _owner(meta: objects.ObjectMeta) -> schemas.OwnerRef | None:
    for ref in meta.ownerReferences:
        if ref.controller:
            return schemas.OwnerRef(kind=ref.kind, name=ref.name, uid=ref.uid,
                                    api_version=ref.apiVersion)
    return None


def translate(
    kind: str, event_type: str, obj: objects.KubeObject, *, relist: str = ""
) -> schemas.KubeEvent:
    meta = obj.metadata
    pod: schemas.PodState | None = None
    template: schemas.TemplateState | None = None
    artifact: schemas.ArtifactState | None = None
    if isinstance(obj, objects.Pod):
        originals = _originals(meta)
        spec, status = obj.spec, obj.status
        pod = schemas.PodState(
            containers=_containers(spec.containers, originals=originals,
                                   statuses=status.containerStatuses),
            init_containers=_containers(spec.initContainers, originals=originals,
                                        statuses=status.initContainerStatuses),
            ephemeral_containers=_containers(spec.ephemeralContainers, originals=originals,
                                             statuses=status.ephemeralContainerStatuses),
            image_pull_secrets=[s.name for s in spec.imagePullSecrets if s.name],
            phase=status.phase,
            node_name=spec.nodeName,
            deletion_timestamp=meta.deletionTimestamp or "",
        )
    elif isinstance(obj, objects.Workload):
        pod_spec = obj.spec.template.spec if obj.spec.template else objects.PodSpec()
        template = schemas.TemplateState(
            containers=_containers(pod_spec.containers, originals={}),
            init_containers=_containers(pod_spec.initContainers, originals={}),
            image_pull_secrets=[s.name for s in pod_spec.imagePullSecrets if s.name],
            replicas=obj.spec.replicas,
        )
    else:
        artifact = schemas.ArtifactState(spec=obj.spec, status=obj.status)
    return schemas.KubeEvent(
        type=event_type,  # type: ignore[arg-type]
        kind=kind,  # type: ignore[arg-type]
        namespace=meta.namespace,
        name=meta.name,
        uid=meta.uid,
        resource_version=meta.resourceVersion,
        owner=_owner(meta),
        pod=pod,
        template=template,
        artifact=artifact,
        relist=relist,
    )


def trace_id(msg_id: str) -> str:
    """The same event always gets the same trace id, so a republished duplicate matches."""
    return hashlib.sha256(msg_id.encode()).hexdigest()[:32]


class Prepared(NamedTuple):
    outgoing: Outgoing
    oversized: bool


def message(event: schemas.KubeEvent, *, max_payload: int) -> Prepared:
    """Subject, payload and headers for an event; an event too large for NATS is replaced by
    its identity with `oversized` set, so consumers know its state is unknown."""
    msg_id = subjects.msg_id(event.uid, event.resource_version, event.type, event.relist)
    payload = schemas.encode(event)
    oversized = len(payload) > max_payload - _HEADROOM
    if oversized:
        payload = schemas.encode(msgspec.structs.replace(
            event, pod=None, template=None, artifact=None, oversized=True))
    return Prepared(
        Outgoing(
            subject=subjects.kube(event.kind, event.namespace, event.uid),
            payload=payload,
            msg_id=msg_id,
            headers={subjects.TRACE_HEADER: trace_id(msg_id)},
        ),
        oversized,
    )


def marker(marker: schemas.RelistMarker) -> Outgoing:
    msg_id = subjects.relist_msg_id(marker.kind, marker.relist, marker.phase)
    return Outgoing(subject=subjects.relist(marker.kind), payload=schemas.encode(marker),
                    msg_id=msg_id, headers={subjects.TRACE_HEADER: trace_id(msg_id)})
