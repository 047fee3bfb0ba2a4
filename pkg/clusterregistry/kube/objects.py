"""Typed, partial views of the Kubernetes objects clusterregistry reads.

msgspec decodes only the fields declared here and skips the rest, which is
both the privacy rule (env values and anything else we do not need never
reach a Python object) and the speed rule (a watch of 100,000 pods decodes
a fraction of each object). Names follow the Kubernetes JSON field names.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

T = TypeVar("T")


class OwnerReference(msgspec.Struct, frozen=True):
    apiVersion: str = ""  # noqa: N815 - Kubernetes field names
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


class ObjectMeta(msgspec.Struct, frozen=True):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""  # noqa: N815
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    ownerReferences: list[OwnerReference] = msgspec.field(default_factory=list)  # noqa: N815
    deletionTimestamp: str | None = None  # noqa: N815


class ContainerSpec(msgspec.Struct, frozen=True):
    name: str = ""
    image: str = ""


class LocalObjectReference(msgspec.Struct, frozen=True):
    name: str = ""


class PodSpec(msgspec.Struct, frozen=True):
    containers: list[ContainerSpec] = msgspec.field(default_factory=list)
    initContainers: list[ContainerSpec] = msgspec.field(default_factory=list)  # noqa: N815
    ephemeralContainers: list[ContainerSpec] = msgspec.field(  # noqa: N815
        default_factory=list)
    imagePullSecrets: list[LocalObjectReference] = msgspec.field(  # noqa: N815
        default_factory=list)
    nodeName: str = ""  # noqa: N815


class ContainerStatus(msgspec.Struct, frozen=True):
    name: str = ""
    imageID: str = ""  # noqa: N815


class PodStatus(msgspec.Struct, frozen=True):
    phase: str = ""
    containerStatuses: list[ContainerStatus] = msgspec.field(  # noqa: N815
        default_factory=list)
    initContainerStatuses: list[ContainerStatus] = msgspec.field(  # noqa: N815
        default_factory=list)
    ephemeralContainerStatuses: list[ContainerStatus] = msgspec.field(  # noqa: N815
        default_factory=list)


class Pod(msgspec.Struct, frozen=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: PodSpec = msgspec.field(default_factory=PodSpec)
    status: PodStatus = msgspec.field(default_factory=PodStatus)


class PodTemplateSpec(msgspec.Struct, frozen=True):
    spec: PodSpec = msgspec.field(default_factory=PodSpec)


class WorkloadSpec(msgspec.Struct, frozen=True):
    template: PodTemplateSpec | None = None
    replicas: int | None = None


class Workload(msgspec.Struct, frozen=True):
    """ReplicaSet, Job, DaemonSet, StatefulSet: an owner with a pod template."""

    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: WorkloadSpec = msgspec.field(default_factory=WorkloadSpec)


class Artifact(msgspec.Struct, frozen=True):
    metadata: ObjectMeta = msgspec.field(default_factory=ObjectMeta)
    spec: dict[str, Any] = msgspec.field(default_factory=dict)
    status: dict[str, Any] = msgspec.field(default_factory=dict)


KubeObject = Pod | Workload | Artifact


class ListMeta(msgspec.Struct, frozen=True):
    resourceVersion: str = ""  # noqa: N815
    # `continue` is a Python keyword
    continue_: str = msgspec.field(default="", name="continue")


class RawList(msgspec.Struct, frozen=True):
    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[msgspec.Raw] = msgspec.field(default_factory=list)


class RawWatchEvent(msgspec.Struct, frozen=True):
    type: str
    object: msgspec.Raw


class TypedWatchEvent(msgspec.Struct, Generic[T], frozen=True):
    """A watch event decoded in one pass into the object's partial view.

    A BOOKMARK is made with `object=None` and its `resource_version` (which the API server
    sends in the object's metadata); an object event reads its version from the object."""

    type: str
    object: T | None
    resource_version: str = ""


class TypedList(msgspec.Struct, Generic[T], frozen=True):
    """A list response decoded in one pass into its items' partial views."""

    metadata: ListMeta = msgspec.field(default_factory=ListMeta)
    items: list[T] = msgspec.field(default_factory=list)


class Status(msgspec.Struct, frozen=True):
    """metav1.Status, as an ERROR watch event or an error response carries it."""

    code: int = 0
    reason: str = ""
    message: str = ""


class BookmarkMeta(msgspec.Struct, frozen=True):
    resourceVersion: str = ""  # noqa: N815


class Bookmark(msgspec.Struct, frozen=True):
    metadata: BookmarkMeta = msgspec.field(default_factory=BookmarkMeta)
