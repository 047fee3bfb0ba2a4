"""The mirror worker on a real work queue: pull secrets from the API server, results, acks,
retries when the source goes away mid-copy, the GC fence, and bad requests."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from kubernetes_asyncio import client as k8s

from clusterregistry import subjects
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.streams import publish
from clusterregistry.kube.clients import api_client
from clusterregistry.kube.secrets import docker_config
from clusterregistry.schemas import SecretRef
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster
from tests.integration.mirror.conftest import FENCE_TTL, MirrorWorld, settings_for
from tests.integration.oci.conftest import inspect_digest
from tests.integration.oci.proxying import RegistryProxy
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration


def _docker_config(host: str, user: str, password: str) -> str:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return base64.b64encode(json.dumps({"auths": {host: {"auth": auth}}}).encode()).decode()


async def _pending(world: MirrorWorld) -> int:
    info = await world.observer.consumer_info(subjects.MIRROR_STREAM, subjects.MIRROR_CONSUMER)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def test_copies_with_the_pods_pull_secret_reports_and_acks(
    mirror_world: MirrorWorld, secure_registry: Registry, registry: Registry,
    kube_api: Cluster, build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("nf/upf", tag="1.2", platforms=("linux/amd64", "linux/arm64"))
    await push_image(image, secure_registry, "nf/upf")
    user, password = secure_registry.credentials or ("", "")
    api = await api_client(str(kube_api.kubeconfig))
    core = k8s.CoreV1Api(api)
    for name, secret in (("pull", password), ("wrong", "wr0ng-pa55-value")):
        await core.create_namespaced_secret("default", k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=name), type="kubernetes.io/dockerconfigjson",
            data={".dockerconfigjson": _docker_config(secure_registry.host, user, secret)}))

    async def read(ref: SecretRef) -> bytes:
        return await docker_config(api, ref.namespace, ref.name)

    try:
        # no configured credentials: only the pod's pull secret opens the artifact store
        worker = await mirror_world.add_worker(
            settings_for(secure_registry, with_credentials=False), secrets=read)
        source = f"{secure_registry.host}/nf/upf:1.2"
        local = f"{registry.host}/{secure_registry.host.replace(':', '_')}/nf/upf:1.2"
        await mirror_world.request("upf-1", source, local,
                                   pull_secrets=[SecretRef(namespace="default", name="pull")])
        await mirror_world.request("upf-2", source, local.replace("upf:", "upf2:"),
                                   pull_secrets=[SecretRef(namespace="default", name="wrong")])
        await mirror_world.request("upf-3", source, local.replace("upf:", "upf3:"),
                                   pull_secrets=[SecretRef(namespace="default", name="absent")])
        results = {r.artifact: r for r in await mirror_world.wait_results(3)}
    finally:
        await api.close()
    ok = results["upf-1"]
    assert ok.ok and ok.digest == image.digest and ok.worker == "worker-1"
    assert sorted(ok.platforms) == ["linux/amd64", "linux/arm64"]
    assert ok.blobs_copied == len(image.blobs)
    assert ok.bytes_copied == sum(b.size for b in image.blobs)
    assert ok.size == image.size + sum(m.size for m in image.manifests) + ok.bytes_copied
    assert await inspect_digest(registry, local) == image.digest

    refused = results["upf-2"]
    assert not refused.ok and refused.reason == "authentication" and not refused.retryable
    assert "wr0ng-pa55-value" not in refused.error and user in refused.error
    missing = results["upf-3"]
    assert not missing.ok and missing.reason == "secret" and "default/absent" in missing.error
    assert await _pending(mirror_world) == 0  # all three settled: acked or terminated
    assert worker.metrics.failures.labels("authentication")._value.get() == 1


async def test_source_stopped_mid_copy_is_retried_and_completes(
    mirror_world: MirrorWorld, secure_registry: Registry, registry: Registry,
    build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("nf/big", layer_sizes=(3_000_000, 2_000_000))
    await push_image(image, secure_registry, "nf/big")
    proxy = RegistryProxy(secure_registry, midway=secure_registry.kill)
    await proxy.start()
    try:
        settings = settings_for(secure_registry, blob_concurrency=1)
        user, password = secure_registry.credentials or ("", "")
        settings.registries[0].host = proxy.host  # the worker reaches the store through it
        settings.registries[0].plain_http = True
        worker = await mirror_world.add_worker(settings)
        local = f"{registry.host}/mirror/nf/big:latest"
        await mirror_world.request("big", f"{proxy.host}/nf/big:latest", local)

        async def failed_once() -> bool:
            return worker.metrics.failures.labels("unavailable")._value.get() >= 1

        await wait_for(failed_once, timeout=60, description="a failed attempt")
        assert not secure_registry.running
        # nothing half-written is visible while the source is away
        assert await registry.manifest("mirror/nf/big", "latest") is None
        assert await registry.manifest("mirror/nf/big", image.digest) is None
        assert not mirror_world.results
        await secure_registry.start()
        [result] = await mirror_world.wait_results(1)
    finally:
        await proxy.stop()
    assert result.ok and result.digest == image.digest
    assert await inspect_digest(registry, local) == image.digest
    assert await _pending(mirror_world) == 0
    assert user and password  # the proxy forwarded the worker's own basic credentials


async def test_no_write_while_gc_holds_the_fence(
    mirror_world: MirrorWorld, nats_server: object, secure_registry: Registry,
    registry: Registry, build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("nf/smf")
    await push_image(image, secure_registry, "nf/smf")
    worker = await mirror_world.add_worker(settings_for(secure_registry))
    assert mirror_world.bus is not None
    gc = Fence(mirror_world.bus, ttl_seconds=FENCE_TTL, holder="gc-test")
    local = f"{registry.host}/mirror/nf/smf:latest"
    async with gc.exclusive(purpose="gc test", wait_timeout=10):
        await mirror_world.request("smf", f"{secure_registry.host}/nf/smf:latest", local)

        async def fenced() -> bool:
            return worker.metrics.requests.labels("fenced")._value.get() >= 1

        await wait_for(fenced, timeout=30, description="the request fenced off")
        assert await registry.manifest("mirror/nf/smf", "latest") is None
        assert worker.metrics.blobs.labels("copied")._value.get() == 0
    [result] = await mirror_world.wait_results(1)
    assert result.ok and result.digest == image.digest


async def test_bad_requests_are_terminated_and_reported(
    mirror_world: MirrorWorld, secure_registry: Registry, registry: Registry,
) -> None:
    worker = await mirror_world.add_worker(settings_for(secure_registry))
    assert mirror_world.bus is not None
    await publish(mirror_world.bus, subjects.MIRROR_REQUEST, b"{not json")
    await mirror_world.request("bad", "UPPER CASE/nope", f"{registry.host}/x:1")
    await mirror_world.request("gone", f"{secure_registry.host}/nf/none:1",
                               f"{registry.host}/m/nf/none:1")
    results = {r.artifact: r for r in await mirror_world.wait_results(2)}
    assert results["bad"].reason == "rejected" and "invalid reference" in results["bad"].error
    assert results["gone"].reason == "manifest_unknown" and not results["gone"].retryable

    async def settled() -> bool:
        return await _pending(mirror_world) == 0

    await wait_for(settled, timeout=10, description="every request settled")
    assert worker.metrics.requests.labels("invalid")._value.get() == 1


async def test_a_copy_longer_than_ack_wait_is_extended_not_redelivered(
    mirror_world: MirrorWorld, secure_registry: Registry, registry: Registry,
    build_image: BuildImage, push_image: PushImage,
) -> None:
    image = build_image("nf/slow", layer_sizes=(500_000,))
    await push_image(image, secure_registry, "nf/slow")
    stalled = asyncio.Event()

    async def stall() -> None:  # more than two ack waits in the middle of a blob
        stalled.set()
        await asyncio.sleep(5.0)

    proxy = RegistryProxy(secure_registry, midway=stall)
    await proxy.start()
    try:
        settings = settings_for(secure_registry, ack_wait_seconds=2.0)
        settings.registries[0].host = proxy.host
        settings.registries[0].plain_http = True
        worker = await mirror_world.add_worker(settings)
        await mirror_world.request("slow", f"{proxy.host}/nf/slow:latest",
                                   f"{registry.host}/mirror/nf/slow:latest")
        [result] = await mirror_world.wait_results(1)
        assert stalled.is_set()
    finally:
        await proxy.stop()
    assert result.ok and result.digest == image.digest and result.duration_seconds > 4
    # in_progress() kept the message: one delivery, one copy, one result

    async def settled() -> bool:
        return worker.handled >= 1 and await _pending(mirror_world) == 0

    await wait_for(settled, timeout=10, description="the request acked")
    assert worker.handled == 1 and worker.metrics.requests.labels("ok")._value.get() == 1
    info = await mirror_world.observer.consumer_info(subjects.MIRROR_STREAM,
                                                     subjects.MIRROR_CONSUMER)
    assert info.delivered.consumer_seq == 1 and not info.num_redelivered
