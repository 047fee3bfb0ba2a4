"""The must-show with the real mirror (issue 6) instead of the test double: a Deployment's
images, pushed to a TLS + basic-auth artifact store, become Artifacts that the real mirror
worker copies into the edge registry; Available carries the digest the image really has."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import references
from clusterregistry.bus.connecting import connect
from clusterregistry.config import MirrorSettings, RegistryAccess
from clusterregistry.mirror.metrics import MirrorMetrics
from clusterregistry.mirror.mirroring import Worker
from clusterregistry.oci.clients import RegistryClients
from clusterregistry.oci.registries import RegistryClient
from clusterregistry_sandbox.registries import Registry
from tests.integration.tracker.worlds import Services
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration


@pytest.fixture
async def mirror_worker(world: Services, secure_registry: Registry, registry: Registry
                        ) -> AsyncIterator[Worker]:
    user, password = secure_registry.credentials or ("", "")
    settings = MirrorSettings(registries=[RegistryAccess(
        host=secure_registry.host, ca_file=str(secure_registry.ca_path), username=user,
        password=password)], ack_wait_seconds=10.0, retry_delay_seconds=0.2)
    bus = await connect([world.nats.url], name="mirror-1")
    clients = RegistryClients(settings, local_registry=registry.host)
    worker = Worker(bus=bus, settings=settings, clients=clients, worker_id="mirror-1",
                    metrics=MirrorMetrics(CollectorRegistry()))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await clients.close()
        await bus.close()


async def test_a_deployment_s_images_are_really_copied(
        world: Services, secure_registry: Registry, registry: Registry,
        build_image: BuildImage, push_image: PushImage, mirror_worker: Worker) -> None:
    sources: dict[str, Any] = {}
    for name, platforms in (("upf", None), ("smf", ["linux/amd64", "linux/arm64"])):
        image = build_image(name, tag="1.0", **({"platforms": platforms} if platforms else {}))
        sources[await push_image(image, secure_registry, f"nf/{name}")] = image
    await world.start_relay()
    await world.relisted()
    await world.start_tracker(early_loading=True, local_registry=registry.host)
    await world.start_reconciler(local_registry=registry.host)
    api = world.cluster.api
    await api.create(api.lookup("apps", "v1", "deployments"), {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "nf"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "nf"}},
                 "template": {"metadata": {"labels": {"app": "nf"}}, "spec": {"containers": [
                     {"name": f"c{i}", "image": source}
                     for i, source in enumerate(sources)]}}}}, namespace="nf")

    def available() -> bool:
        artifacts = world.artifacts()
        return set(artifacts) == set(sources) and all(
            (a.get("status") or {}).get("phase") == "Available" for a in artifacts.values())

    await world.until(available, what="both Artifacts copied", timeout=120)
    edge = RegistryClient(registry.host, plain_http=True)
    try:
        for source, image in sources.items():
            status = world.artifacts()[source]["status"]
            assert status["digest"] == image.digest
            assert status["references"]["count"] == 1
            assert status["size"] > 0
            local = references.to_local(references.parse(source), registry.host)
            # the copy is in the edge registry under the local name, byte-identical
            _, digest, _ = await edge.get_manifest(local.path, local.tag)
            assert digest == image.digest
    finally:
        await edge.close()
    records = await world.artifact_records()
    assert {r.source: (r.phase, r.digest) for r in records.values()} == {
        source: ("Available", image.digest) for source, image in sources.items()}
