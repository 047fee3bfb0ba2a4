"""The reconciler process: settings in, Artifacts kept true, probes and metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry.bus.connecting import connect
from clusterregistry.config import Settings
from clusterregistry.kube.clients import api_client
from clusterregistry.reconciler.metrics import ReconcilerMetrics
from clusterregistry.reconciler.reconciling import Reconciler
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import Service


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    identity: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> None:
    async with (await connect(settings.nats.servers, name="clusterregistry-reconciler") as bus,
                await api_client(kubeconfig) as api):
        reconciler = Reconciler(
            api=api, bus=bus, settings=settings.reconciler,
            local_registry=settings.local_registry, identity=identity,
            stream_replicas=settings.nats.stream_replicas,
            metrics=ReconcilerMetrics(metrics_registry))
        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                             registry=metrics_registry)
        # ready once the streams, buckets and consumers exist and the owner records are loaded
        probes.add_check("nats", lambda: reconciler.ready and bus.connected)
        probes.add_check("refs", lambda: reconciler.refs_loaded)
        async with probes:
            await reconciler.run(stop)


SERVICE = Service(
    name="reconciler",
    summary="clusterregistry reconciler: one Artifact per source image, mirror requests, "
            "true statuses.",
    serve=serve, kubeconfig_help="the API server its Artifacts live in",
    identity_help="names this reconciler's Artifact-event consumer (one per replica)")
