"""The relay process: settings in, a leading-or-standing-by relay out, probes and metrics."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry.bus.connecting import connect
from clusterregistry.config import Settings
from clusterregistry.kube.clients import api_client
from clusterregistry.relay.metrics import RelayMetrics
from clusterregistry.relay.relaying import Relay
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import Service
from clusterregistry.runtime.running import identity as default_identity


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    identity: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> None:
    async with (await connect(settings.nats.servers, name="clusterregistry-relay") as bus,
                await api_client(kubeconfig) as api):
        relay = Relay(
            api=api, bus=bus, settings=settings.relay, namespace=settings.namespace,
            identity=identity or default_identity(),
            stream_replicas=settings.nats.stream_replicas,
            metrics=RelayMetrics(metrics_registry),
        )
        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                             registry=metrics_registry)
        # ready once the stream exists; a standby relay is ready too (it can take over)
        probes.add_check("nats", lambda: relay.ready and bus.connected)
        async with probes:
            await relay.run(stop)


SERVICE = Service(
    name="relay", summary="clusterregistry relay: Kubernetes watch events onto NATS JetStream.",
    serve=serve, kubeconfig_help="the API server it watches",
    identity_help="Lease holder identity (one relay publishes, the others stand by)")
