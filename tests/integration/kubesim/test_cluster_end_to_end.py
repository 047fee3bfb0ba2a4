"""The issue's proof, through the outside path: kubectl over HTTPS creates a Deployment; its
pods pull from a TLS + basic-auth registry with an imagePullSecret; a missing image keeps a
pod in ErrImagePull/ImagePullBackOff until skopeo pushes it, then the pod runs."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster, ClusterSettings
from tests.world.images import BuildImage, PushImage
from tests.world.kube import Kubectl, fast_kubelet, running_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
async def cluster(tmp_path: Path, secure_registry: Registry) -> AsyncIterator[Cluster]:
    assert secure_registry.ca_path is not None
    settings = ClusterSettings(kubelet=fast_kubelet(
        ca_files=(str(secure_registry.ca_path),)))
    async for cluster in running_cluster(tmp_path, settings):
        yield cluster


def _pull_secret(registry: Registry) -> dict[str, Any]:
    user, password = registry.credentials or ("", "")
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = {"auths": {registry.host: {"auth": auth}}}
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "pull", "namespace": "nf"},
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()}}


def _deployment(image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "upf", "namespace": "nf"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "upf"}},
                     "template": {"metadata": {"labels": {"app": "upf"}}, "spec": {
                         "imagePullSecrets": [{"name": "pull"}],
                         "containers": [{"name": "upf", "image": image}]}}}}


async def test_deployment_runs_once_its_image_is_pushed(
    cluster: Cluster, secure_registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    kubectl = Kubectl(cluster.kubeconfig)
    image_ref = f"{secure_registry.host}/nf/upf:1.2"
    await kubectl.run("create", "namespace", "nf")
    await kubectl.run("create", "-f", "-", stdin=json.dumps(_pull_secret(secure_registry)))
    await kubectl.run("create", "-f", "-", stdin=json.dumps(_deployment(image_ref)))

    async def pods() -> list[dict[str, Any]]:
        listed = await kubectl.run("get", "pods", "-n", "nf", "-l", "app=upf", "-o", "json")
        items: list[dict[str, Any]] = listed.json()["items"]
        return items

    def waiting_reason(pod: dict[str, Any]) -> str:
        statuses = pod.get("status", {}).get("containerStatuses") or [{}]
        return str(statuses[0].get("state", {}).get("waiting", {}).get("reason", ""))

    async def pull_failing() -> list[dict[str, Any]] | None:
        current = await pods()
        if len(current) == 2 and all(
            waiting_reason(p) in ("ErrImagePull", "ImagePullBackOff") for p in current
        ):
            return current
        return None

    failing = await wait_for(pull_failing, timeout=60, description="pods failing to pull")
    message = failing[0]["status"]["containerStatuses"][0]["state"]["waiting"].get("message", "")
    assert "nf/upf" in message and "not found" in message.lower()
    assert all(p["status"]["phase"] == "Pending" for p in failing)
    # the ReplicaSet in between, owned by the Deployment
    rs = (await kubectl.run("get", "replicasets", "-n", "nf", "-o", "json")).json()["items"]
    assert len(rs) == 1
    assert rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert failing[0]["metadata"]["ownerReferences"][0]["uid"] == rs[0]["metadata"]["uid"]

    image = build_image("upf", tag="1.2", layer_sizes=(2048,))
    await push_image(image, secure_registry, "nf/upf", "1.2")

    async def running() -> list[dict[str, Any]] | None:
        current = await pods()
        if len(current) == 2 and all(p["status"].get("phase") == "Running" for p in current):
            return current
        return None

    ran = await wait_for(running, timeout=60, description="pods running after the push")
    for pod in ran:
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True
        assert status["imageID"].endswith(image.digest)
    table = await kubectl.run("get", "deployment", "upf", "-n", "nf")
    assert table.stdout.splitlines()[1].split()[1] == "2/2"
