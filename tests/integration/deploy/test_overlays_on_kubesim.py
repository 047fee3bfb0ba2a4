"""The overlays, applied with `kubectl apply -f -` to kubesim: everything is accepted, and
every Deployment and the NATS StatefulSet get their pods (ha: on the system node pool only),
with their images really resolved by the simulated kubelets.

The images are the overlay's own names mirrored into a local registry (what an operator of a
disconnected cluster does, with kustomize's `images:`), so a pod becomes Ready only when the
kubelet found its image there. The processes inside do not run: kubesim's kubelet resolves
images, it does not execute them.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster, ClusterSettings
from tests.world.images import BuildImage, PushImage
from tests.world.kube import Kubectl, fast_kubelet

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
OVERLAYS = ROOT / "deploy" / "kustomize" / "overlays"
HA = OVERLAYS / "ha"
NAMESPACE = "clusterregistry"
SYSTEM_POOL = "kubernetes.azure.com/mode=system"
# the overlay's images (base kustomization.yaml) -> the repository they are mirrored to
IMAGES = {
    "ghcr.io/clusterregistry/clusterregistry": "clusterregistry/clusterregistry",
    "docker.io/library/registry": "library/registry",
    "docker.io/library/nats": "library/nats",
}


@pytest.fixture
async def cluster(tmp_path: Path, registry: Registry) -> AsyncIterator[Cluster]:
    """kubesim with controllers whose kubelets pull from the local registry over HTTP."""
    settings = ClusterSettings(kubelet=fast_kubelet(
        insecure_registries=[registry.host]))
    instance = Cluster(tmp_path / "kubesim", settings)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()


def mirrored_overlay(directory: Path, registry: Registry, overlay: Path = HA) -> Path:
    """A kustomization on top of an overlay that only renames the images."""
    directory.mkdir()
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(overlay, directory)],
        "images": [{"name": name, "newName": f"{registry.host}/{repo}"}
                   for name, repo in IMAGES.items()],
    }))
    return directory


async def workloads(kubectl: Kubectl) -> list[dict[str, Any]]:
    result = await kubectl.run("get", "deployments,statefulsets", "-n", NAMESPACE, "-o", "json")
    items: list[dict[str, Any]] = result.json()["items"]
    return items


async def build_with_images(
    kubectl: Kubectl, overlay: Path, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> tuple[str, list[dict[str, Any]]]:
    """The overlay built with its images renamed to the local registry, where an image is
    pushed under every name and tag it uses."""
    image = build_image("tiny", layer_sizes=[512])
    manifests = (await kubectl.run("kustomize", str(overlay))).stdout
    objects = [d for d in yaml.safe_load_all(manifests) if d]
    for name, repo in IMAGES.items():
        tags = {c["image"].rsplit(":", 1)[1]
                for o in objects if o["kind"] in ("Deployment", "StatefulSet")
                for c in o["spec"]["template"]["spec"]["containers"]
                if c["image"].startswith(f"{registry.host}/{repo}:")}
        assert len(tags) == 1, (name, tags)  # every image of the overlay was renamed
        await push_image(image, registry, repo, tag=tags.pop())
    return manifests, objects


async def test_the_dev_overlay_runs_on_kubesim(
    cluster: Cluster, registry: Registry, build_image: BuildImage, push_image: PushImage,
    tmp_path: Path,
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    overlay = mirrored_overlay(tmp_path / "mirrored", registry, OVERLAYS / "dev")
    manifests, objects = await build_with_images(kubectl, overlay, registry, build_image,
                                                 push_image)
    applied = await kubectl.run("apply", "-f", "-", stdin=manifests)
    assert len(applied.stdout.splitlines()) == len(objects)

    async def all_ready() -> bool:
        items = await workloads(kubectl)
        return len(items) == 9 and all(
            w.get("status", {}).get("readyReplicas", 0) == w["spec"]["replicas"] == 1
            for w in items)

    await wait_for(all_ready, timeout=120, description="every dev workload ready")


async def test_the_ha_overlay_runs_on_kubesim(
    cluster: Cluster, registry: Registry, build_image: BuildImage, push_image: PushImage,
    tmp_path: Path,
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    overlay = mirrored_overlay(tmp_path / "mirrored", registry)
    manifests, objects = await build_with_images(kubectl, overlay, registry, build_image,
                                                 push_image)

    # Applied before any node is in the system pool: accepted, but nothing can schedule.
    applied = await kubectl.run("apply", "-f", "-", stdin=manifests)
    lines = applied.stdout.splitlines()
    assert len(lines) == len(objects)
    assert all(line.endswith(" created") for line in lines), applied.stdout

    async def pending_for_the_pool() -> bool:
        pods = (await kubectl.run("get", "pods", "-n", NAMESPACE, "-o", "json")).json()["items"]
        reasons = [c.get("message", "") for p in pods
                   for c in p.get("status", {}).get("conditions", [])
                   if c["type"] == "PodScheduled" and c["status"] == "False"]
        return len(pods) >= 27 and len(reasons) == len(pods) and all(
            "didn't match Pod's node affinity/selector" in r for r in reasons)

    await wait_for(pending_for_the_pool, timeout=60, description="pods pending on the pool")

    await kubectl.run("label", "nodes", "--all", SYSTEM_POOL)

    async def all_ready() -> list[dict[str, Any]] | None:
        items = await workloads(kubectl)
        ready = [w for w in items
                 if w.get("status", {}).get("readyReplicas", 0) == w["spec"]["replicas"] >= 3]
        return items if len(ready) == len(items) == 9 else None

    items = await wait_for(all_ready, timeout=120, description="every workload ready")
    assert {w["metadata"]["name"] for w in items} == {
        f"clusterregistry-{c}" for c in
        ("registry", "front", "webhook", "relay", "tracker", "reconciler", "mirror", "gc",
         "nats")}

    pods = (await kubectl.run("get", "pods", "-n", NAMESPACE, "-o", "json")).json()["items"]
    nodes = (await kubectl.run("get", "nodes", "-o", "json")).json()["items"]
    pool = {n["metadata"]["name"] for n in nodes
            if n["metadata"]["labels"].get("kubernetes.azure.com/mode") == "system"}
    running = [p for p in pods if p["status"].get("phase") == "Running"]
    assert len(running) == 3 * 9
    for pod in running:
        assert pod["spec"]["nodeName"] in pool
        (status,) = pod["status"]["containerStatuses"]
        # the kubelet resolved the image in the local registry
        assert status["imageID"].startswith(f"{registry.host}/")
        assert status["ready"] is True

    # the rest of the overlay was stored as sent
    for kind, count in (("hpa", 4), ("pdb", 9), ("services", 10), ("pvc", 1),
                        ("roles", 2), ("rolebindings", 2), ("configmaps", 4)):
        listed = (await kubectl.run("get", kind, "-n", NAMESPACE, "-o", "json")).json()
        assert len(listed["items"]) == count, kind
    crd = await kubectl.run("get", "crd", "artifacts.clusterregistry.io", "-o", "name")
    assert crd.stdout.strip() == "customresourcedefinition.apiextensions.k8s.io/" \
        "artifacts.clusterregistry.io"
    # Artifacts are served once the CRD is in: the relay and reconciler can list them
    artifacts = await kubectl.run("get", "artifacts", "-o", "json")
    assert artifacts.json()["items"] == []

    # a second apply changes no workload (the rollout would otherwise start again)
    again = await kubectl.run("apply", "-f", "-", stdin=manifests)
    changed = [line for line in again.stdout.splitlines()
               if not line.endswith(" unchanged")]
    assert not [line for line in changed if "deployment" in line or "created" in line], changed
