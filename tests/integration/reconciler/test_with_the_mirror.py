"""The must-show with the real mirror (issue 6) instead of the test double: a Deployment's
images, pushed to a TLS + basic-auth artifact store, become Artifacts that the real mirror
worker copies into the edge registry; Available carries the digest the image really has.
And while a copy slowed by the bandwidth limit runs, its Artifact shows its progress."""

from __future__ import annotations

import asyncio
import contextlib
import re
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


@contextlib.asynccontextmanager
async def running_worker(world: Services, secure_registry: Registry, registry: Registry, *,
                         metrics: MirrorMetrics | None = None, **overrides: Any
                         ) -> AsyncIterator[Worker]:
    user, password = secure_registry.credentials or ("", "")
    settings = MirrorSettings(registries=[RegistryAccess(
        host=secure_registry.host, ca_file=str(secure_registry.ca_path), username=user,
        password=password)], **{"ack_wait_seconds": 10.0, "retry_delay_seconds": 0.2,
                                **overrides})
    bus = await connect([world.nats.url], name="mirror-1")
    clients = RegistryClients(settings, local_registry=registry.host)
    worker = Worker(bus=bus, settings=settings, clients=clients, worker_id="mirror-1",
                    metrics=metrics or MirrorMetrics(CollectorRegistry()))
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


@pytest.fixture
async def mirror_worker(world: Services, secure_registry: Registry, registry: Registry
                        ) -> AsyncIterator[Worker]:
    async with running_worker(world, secure_registry, registry) as worker:
        yield worker


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


MiB = 1 << 20


async def test_a_slow_copy_shows_its_progress_until_it_is_available(
        world: Services, secure_registry: Registry, registry: Registry,
        build_image: BuildImage, push_image: PushImage) -> None:
    """8 MiB at 2 MiB/s (mirror.maxBytesPerSecond): about 4 s of copying, during which the
    Artifact's status.progress grows (the mirror publishes every 0.5 s, the reconciler
    writes at most once a second) and the in-flight gauge counts the bytes; once the
    result lands the progress is gone and the gauge is back to 0."""
    image = build_image("ran", tag="1.0", layer_sizes=[4 * MiB, 4 * MiB])
    source = await push_image(image, secure_registry, "nf/ran")
    metrics_registry = CollectorRegistry()
    async with running_worker(world, secure_registry, registry,
                              metrics=MirrorMetrics(metrics_registry),
                              max_bytes_per_second=2 * MiB, progress_interval_seconds=0.5):
        await world.start_relay()
        await world.relisted()
        await world.start_tracker(early_loading=True, local_registry=registry.host)
        await world.start_reconciler(local_registry=registry.host,
                                     progress_interval_seconds=1.0)
        api = world.cluster.api
        await api.create(api.lookup("apps", "v1", "deployments"), {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ran"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "ran"}},
                     "template": {"metadata": {"labels": {"app": "ran"}}, "spec": {
                         "containers": [{"name": "ran", "image": source}]}}}},
            namespace="nf")

        seen: list[dict[str, Any]] = []  # every distinct progress the status showed
        remaining: list[float] = []  # the gauge while the copy ran

        def gauge(state: str) -> float:
            value = metrics_registry.get_sample_value(
                "clusterregistry_mirror_in_flight_bytes", {"state": state})
            assert value is not None
            return value

        def progressing() -> bool:
            status = (world.artifacts().get(source) or {}).get("status") or {}
            if "progress" in status and (not seen or seen[-1]["progress"] != status["progress"]):
                seen.append(status)
            if gauge("remaining") > 0:
                remaining.append(gauge("remaining"))
            return len(seen) >= 2

        await world.until(progressing, what="the progress shown, and moving", timeout=60)

        def available() -> dict[str, Any] | None:
            status = (world.artifacts().get(source) or {}).get("status") or {}
            return status if status.get("phase") == "Available" else None

        done = await world.until(available, what="the copy Available", timeout=60)
        assert "progress" not in done and "progressHuman" not in done
        assert done["digest"] == image.digest
        for status in seen:
            assert status["phase"] == "Mirroring"
            progress = status["progress"]
            # the blob bytes the manifest names: the two layers and the config
            assert 8 * MiB <= progress["bytesTotal"] < done["size"]
            assert 0 <= progress["bytesDone"] <= progress["bytesTotal"]
            assert re.fullmatch(r"\d+(\.\d)?(Ki|Mi)?/\d+(\.\d)?Mi \(\d{1,3}%\)",
                                status["progressHuman"]), status["progressHuman"]
            assert status["progress"]["updated"].endswith("Z")
        assert [s["progress"]["bytesDone"] for s in seen] == sorted(
            s["progress"]["bytesDone"] for s in seen)
        assert len({s["progress"]["bytesTotal"] for s in seen}) == 1
        assert remaining and max(remaining) <= seen[0]["progress"]["bytesTotal"]
        assert (gauge("done"), gauge("remaining")) == (0, 0)  # no copy runs any more
