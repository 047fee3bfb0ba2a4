"""The relay process: settings in, a leading-or-standing-by relay out, probes and metrics."""

from __future__ import annotations

import asyncio
import os
import socket

from clusterregistry.bus.connecting import connect
from clusterregistry.config import Settings
from clusterregistry.kube.clients import api_client
from clusterregistry.relay.metrics import RelayMetrics
from clusterregistry.relay.relaying import Relay
from clusterregistry.runtime.probes import ProbeServer


def default_identity() -> str:
    """The pod name in a cluster (HOSTNAME), made unique per process elsewhere."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    identity: str | None = None,
    probe_host: str | None = None,
) -> None:
    async with (await connect(settings.nats.servers, name="clusterregistry-relay") as bus,
                await api_client(kubeconfig) as api):
        relay = Relay(
            api=api, bus=bus, settings=settings.relay, namespace=settings.namespace,
            identity=identity or default_identity(),
            stream_replicas=settings.nats.stream_replicas, metrics=RelayMetrics(),
        )
        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port)
        # ready once the stream exists; a standby relay is ready too (it can take over)
        probes.add_check("nats", lambda: relay.ready and bus.connected)
        async with probes:
            await relay.run(stop)
