"""The tracker process: settings in, owner records kept in KV, probes and metrics."""

from __future__ import annotations

import asyncio

from clusterregistry.bus.connecting import connect
from clusterregistry.config import Settings
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.tracker.tracking import Tracker
from clusterregistry.tracker.metrics import TrackerMetrics


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    identity: str | None = None,
    probe_host: str | None = None,
) -> None:
    async with await connect(settings.nats.servers, name="clusterregistry-tracker") as bus:
        tracker = Tracker(
            bus=bus, settings=settings.tracker, early_loading=settings.enable_early_loading,
            local_registry=settings.local_registry, identity=identity,
            stream_replicas=settings.nats.stream_replicas, metrics=TrackerMetrics())
        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port)
        # ready once the consumer exists and its cache is warm
        probes.add_check("nats", lambda: tracker.ready and bus.connected)
        async with probes:
            await tracker.run(stop)
