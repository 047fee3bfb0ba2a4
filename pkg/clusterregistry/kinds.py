"""Every Kubernetes name clusterregistry shares across processes, in one module.

The resources the relay watches (and the kind names its subjects carry), the
Artifact custom resource, and the annotation through which the webhook tells
everyone else what an image was before it rewrote it.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Resource(NamedTuple):
    group: str
    version: str
    plural: str


ARTIFACT_GROUP: Final = "clusterregistry.io"
ARTIFACT_VERSION: Final = "v1alpha1"
ARTIFACT_PLURAL: Final = "artifacts"

# subject kind name -> the resource watched for it, in the order the relay starts them
WATCHED: Final[dict[str, Resource]] = {
    "pod": Resource("", "v1", "pods"),
    "replicaset": Resource("apps", "v1", "replicasets"),
    "job": Resource("batch", "v1", "jobs"),
    "daemonset": Resource("apps", "v1", "daemonsets"),
    "statefulset": Resource("apps", "v1", "statefulsets"),
    "artifact": Resource(ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL),
}

# JSON object: container name -> the image reference before the webhook rewrote it
ORIGINAL_IMAGES_ANNOTATION: Final = "clusterregistry.io/original-images"
# a pod labelled so is never rewritten
MUTATE_LABEL: Final = "clusterregistry.io/mutate"
