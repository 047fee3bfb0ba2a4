"""The mirror reading its sources through the front (mirror.sourceThroughFront): a kubelet's
pull and the mirror's copy of the same never-seen image cost the source one GET per blob."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from prometheus_client import CollectorRegistry

from clusterregistry.bus import ledgers
from clusterregistry.bus.connecting import connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.mirror.metrics import MirrorMetrics
from clusterregistry.mirror.mirroring import Worker
from clusterregistry.oci.clients import RegistryClients
from tests.integration.front.conftest import (
    LOCK_TTL,
    FrontWorld,
    assert_pulled,
    image_digests,
    pull,
    source_requests,
)
from tests.integration.mirror.conftest import MirrorWorld, settings_for
from tests.world.images import BuildImage, PushImage


async def test_the_mirror_and_a_kubelet_share_one_fetch_through_the_front(
    front_world: FrontWorld, build_image: BuildImage, push_image: PushImage, tmp_path: Path,
) -> None:
    image = build_image("both", layer_sizes=[1_500_000, 500_000])
    await push_image(image, front_world.store, "nf/both", tag="1")
    front = await front_world.start_front()
    assert front_world.nats is not None
    mirror = MirrorWorld(nats=front_world.nats, local_registry=front_world.local_registry)
    await mirror.start()
    bus = await connect([front_world.nats.url], name="worker-1")
    # the worker as deployed with a front: localRegistry is the front, writes go straight
    # to distribution (registryEndpoint)
    settings = settings_for(front_world.store, source_through_front=True)
    clients = RegistryClients(settings, local_registry=front_world.local_registry,
                              registry_endpoint=front_world.edge.host)
    kv = await ledgers.ensure_bucket(bus, ttl_seconds=settings.blob_ledger_ttl_seconds)
    worker = Worker(bus=bus, settings=settings, clients=clients, worker_id="worker-1",
                    ledger=ledgers.KvBlobLedger(kv, holder="worker-1"),
                    fence=Fence(bus, ttl_seconds=LOCK_TTL, holder="worker-1"),
                    metrics=MirrorMetrics(CollectorRegistry()))
    await worker.prepare()
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop), name="worker-1")
    path = front_world.path("nf/both")
    try:
        await mirror.request("a-both", f"{front_world.store.host}/nf/both:1",
                             f"{front_world.local_registry}/{path}:1")
        pulled = await pull(front_world.ref("nf/both", "1", front=front), tmp_path / "kubelet")
        [result] = await mirror.wait_results(1)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await clients.close()
        await bus.close()
        await mirror.stop()

    assert result.ok, result
    assert result.digest == image.digest
    assert_pulled(image, pulled)
    # the source saw one GET per manifest and per blob for the two of them
    assert dict(source_requests(front_world.store)) == {
        "/v2/nf/both/manifests/1": 1,
        **{f"/v2/nf/both/blobs/{d}": 1 for d in image_digests(image)}}
    # and the image is whole in the registry: blobs (the front's or the mirror's) and the
    # manifest the mirror put after them
    await front_world.wait_stored("nf/both", image_digests(image))
    found = await front_world.edge.manifest(path, "1")
    assert found is not None and found.digest == image.digest
    await front_world.wait_spool_empty(front)
