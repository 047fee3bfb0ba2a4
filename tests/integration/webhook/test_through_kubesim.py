"""The webhook as kube-apiserver (kubesim) calls it: controllers' pods, kubectl, a kubelet that
really pulls from a real registry.

One docker-registry plays both the source and the local registry: the source is
`127.0.0.1:PORT/nf/upf:1.2`, the local registry is spelled `localhost:PORT`, so the
rewrite gives `localhost:PORT/127.0.0.1_PORT/nf/upf:1.2` and the image is pushed under
both names. A pod is Running only once the kubelet resolved its (rewritten) image.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clusterregistry import kinds
from clusterregistry.webhook.registrations import mutating_webhook_configuration
from clusterregistry_sandbox.images import push
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import free_port, wait_for
from kubesim.certificates import CertificateAuthority
from kubesim.running import Cluster, ClusterSettings
from tests.integration.webhook.conftest import ca_bundle, running_webhook, webhook_settings
from tests.world.images import BuildImage, PushImage
from tests.world.kube import Kubectl, fast_kubelet

pytestmark = pytest.mark.integration


@dataclass
class World:
    cluster: Cluster
    kubectl: Kubectl
    registry: Registry
    source: str  # 127.0.0.1:P/nf/upf:1.2
    local: str  # localhost:P/127.0.0.1_P/nf/upf:1.2
    local_registry: str

    async def register(self, url: str, ca: CertificateAuthority, **kw: Any) -> None:
        settings = webhook_settings(local_registry=self.local_registry)
        configuration = mutating_webhook_configuration(settings, url=url,
                                                       ca_bundle=ca_bundle(ca), **kw)
        await self.kubectl.run("create", "-f", "-", stdin=json.dumps(configuration))

    async def create(self, obj: dict[str, Any]) -> None:
        await self.kubectl.run("create", "-f", "-", stdin=json.dumps(obj))

    async def pods(self, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.kubectl.run(
            "get", "pods", "-n", namespace, "-l", selector, "-o", "json")).json()["items"]
        return items

    async def running(self, selector: str, count: int,
                      namespace: str = "default") -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]] | None:
            pods = await self.pods(selector, namespace)
            ok = len(pods) == count and all(p.get("status", {}).get("phase") == "Running"
                                            for p in pods)
            return pods if ok else None

        return await wait_for(check, timeout=60, description=f"{count} running pods {selector}")


@pytest.fixture
async def world(tmp_path: Path, registry: Registry, build_image: BuildImage,
                push_image: PushImage) -> AsyncIterator[World]:
    image = build_image("nf/upf", tag="1.2")
    source = await push_image(image, registry, "nf/upf", tag="1.2")
    mapped = f"127.0.0.1_{registry.port}/nf/upf:1.2"
    await push(image, dest_ref=f"{registry.host}/{mapped}", tls_verify=False)
    local_registry = f"localhost:{registry.port}"
    cluster = Cluster(tmp_path / "kube", ClusterSettings(kubelet=fast_kubelet(
        insecure_registries=[registry.host, local_registry])))
    await cluster.start()
    try:
        kubectl = Kubectl(cluster.kubeconfig)
        await kubectl.run("create", "namespace", "clusterregistry")
        yield World(cluster, kubectl, registry, source, f"{local_registry}/{mapped}",
                    local_registry)
    finally:
        await cluster.stop()


def deployment(name: str, image: str, *, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "upf", "image": image}]}}},
    }


def bare_pod(name: str, image: str, *, namespace: str = "default",
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": image}]}}


def originals(pod: dict[str, Any]) -> dict[str, str]:
    text = pod["metadata"].get("annotations", {}).get(kinds.ORIGINAL_IMAGES_ANNOTATION)
    return json.loads(text) if text else {}


async def test_deployment_pods_come_up_rewritten_and_annotated_kube_system_untouched(
        world: World, tmp_path: Path, ca: CertificateAuthority) -> None:
    async with running_webhook(tmp_path, ca, local_registry=world.local_registry) as webhook:
        await world.register(webhook.url, ca, failure_policy="Fail")
        await world.create(deployment("upf", world.source))
        pods = await world.running("app=upf", 2)
        assert [p["spec"]["containers"][0]["image"] for p in pods] == [world.local] * 2
        assert [originals(p) for p in pods] == [{"upf": world.source}] * 2
        # the kubelet resolved the rewritten reference in the registry
        assert all(p["status"]["containerStatuses"][0]["image"] == world.local for p in pods)

        # kube-system: untouched unless labelled as AOSM's default expression says
        await world.create(bare_pod("coredns", world.source, namespace="kube-system",
                                    labels={"k8s-app": "kube-dns"}))
        await world.create(bare_pod("commissioning", world.source, namespace="kube-system",
                                    labels={"app": "commissioning"}))
        # clusterregistry's own namespace, and the opt-out label
        await world.create(bare_pod("registry", world.source, namespace="clusterregistry"))
        await world.create(bare_pod("opted-out", world.source,
                                    labels={kinds.MUTATE_LABEL: "false"}))

        async def image_of(name: str, namespace: str) -> str:
            got = (await world.kubectl.run("get", "pod", name, "-n", namespace,
                                           "-o", "json")).json()
            image: str = got["spec"]["containers"][0]["image"]
            return image

        assert await image_of("coredns", "kube-system") == world.source
        assert await image_of("commissioning", "kube-system") == world.local
        assert await image_of("registry", "clusterregistry") == world.source
        assert await image_of("opted-out", "default") == world.source
        # the API server filtered those three: the webhook saw the deployment's pods and
        # the commissioning pod only
        assert webhook.metric("clusterregistry_webhook_admissions_total",
                              outcome="patched") == 3
        assert webhook.metric("clusterregistry_webhook_admissions_total",
                              outcome="excluded") == 0

        # kubectl debug: an ephemeral container, through the ephemeralcontainers subresource
        name = pods[0]["metadata"]["name"]
        await world.kubectl.run("debug", name, f"--image={world.source}", "-c", "debugger")
        got = (await world.kubectl.run("get", "pod", name, "-o", "json")).json()
        assert got["spec"]["ephemeralContainers"][0]["image"] == world.local
        assert originals(got) == {"upf": world.source}  # the subresource cannot change it
        assert webhook.metric("clusterregistry_webhook_images_rewritten_total",
                              kind="ephemeralContainers") == 1


async def test_without_match_conditions_the_webhook_enforces_the_expression_itself(
        world: World, tmp_path: Path, ca: CertificateAuthority) -> None:
    async with running_webhook(tmp_path, ca, local_registry=world.local_registry) as webhook:
        # as on a cluster older than matchConditions
        await world.register(webhook.url, ca, failure_policy="Fail", match_conditions=False)
        await world.create(bare_pod("coredns", world.source, namespace="kube-system"))
        await world.create(bare_pod("nf", world.source))
        pods = await world.running("", 1, namespace="kube-system")
        assert pods[0]["spec"]["containers"][0]["image"] == world.source
        assert originals(pods[0]) == {}
        pods = await world.running("", 1)
        assert pods[0]["spec"]["containers"][0]["image"] == world.local
        assert webhook.metric("clusterregistry_webhook_admissions_total",
                              outcome="excluded") == 1
        assert webhook.metric("clusterregistry_webhook_images_skipped_total",
                              reason="match-condition") == 1


async def test_webhook_down_with_failure_policy_ignore_pods_start_with_original_images(
        world: World, ca: CertificateAuthority) -> None:
    # nothing listens there: every call is refused
    await world.register(f"https://127.0.0.1:{free_port()}/mutate", ca,
                         failure_policy="Ignore")
    await world.create(deployment("upf", world.source))
    pods = await world.running("app=upf", 2)
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [world.source] * 2
    assert [originals(p) for p in pods] == [{}, {}]
