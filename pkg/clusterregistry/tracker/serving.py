"""The tracker process: settings in, owner records kept in KV, probes and metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry.bus.connecting import connect
from clusterregistry.config import Settings
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import Service
from clusterregistry.tracker.metrics import TrackerMetrics
from clusterregistry.tracker.tracking import Tracker


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    identity: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> None:
    async with await connect(settings.nats.servers, name="clusterregistry-tracker") as bus:
        tracker = Tracker(
            bus=bus, settings=settings.tracker, early_loading=settings.enable_early_loading,
            local_registry=settings.local_registry, identity=identity,
            stream_replicas=settings.nats.stream_replicas,
            metrics=TrackerMetrics(metrics_registry))
        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                             registry=metrics_registry)
        # ready once the consumer exists and its cache is warm
        probes.add_check("nats", lambda: tracker.ready and bus.connected)
        async with probes:
            await tracker.run(stop)


SERVICE = Service(
    name="tracker",
    summary="clusterregistry tracker: which images each pod owner uses, from the relay's "
            "stream to KV.",
    serve=serve,
    identity_help="names this replica in logs (every replica shares one consumer)")
