"""The mirror process: settings in, a worker on the work queue, probes and metrics out."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry.bus import ledgers
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.keyvalues import Records
from clusterregistry.config import Settings
from clusterregistry.errors import ConfigError, RetryableError
from clusterregistry.kube.clients import ApiClient, api_client
from clusterregistry.kube.events import EventRecorder, source_for
from clusterregistry.kube.secrets import docker_config
from clusterregistry.mirror.metrics import MirrorMetrics
from clusterregistry.mirror.mirroring import Worker
from clusterregistry.oci.clients import RegistryClients
from clusterregistry.runtime.lifecycle import sleep_unless_stopped
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import Service
from clusterregistry.runtime.running import identity as default_identity
from clusterregistry.schemas import BlobLocation, SecretRef

log = logging.getLogger(__name__)


async def _read_secret(api: ApiClient, ref: SecretRef) -> bytes:
    return await docker_config(api, ref.namespace, ref.name)


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    identity: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> None:
    """Run one worker until `stop`. Without a Kubernetes configuration the worker still
    copies, but a request naming pull secrets fails (permanently) with a clear error."""
    worker_id = identity or settings.mirror.worker_id or default_identity()
    async with contextlib.AsyncExitStack() as closing:
        clients = RegistryClients(settings.mirror, local_registry=settings.local_registry,
                                  registry_endpoint=settings.registry_endpoint)
        closing.push_async_callback(clients.close)
        bus = await closing.enter_async_context(
            await connect(settings.nats.servers, name=f"clusterregistry-mirror-{worker_id}"))
        api: ApiClient | None = None
        try:
            api = await closing.enter_async_context(await api_client(kubeconfig))
        except ConfigError:
            if kubeconfig:
                raise
        replicas = settings.nats.stream_replicas
        fence = Fence(bus, ttl_seconds=settings.gc.lock_ttl_seconds, holder=worker_id,
                      replicas=replicas)
        workers: list[Worker] = []  # the worker, once NATS let it be made
        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                             registry=metrics_registry)
        probes.add_check("nats", lambda: bool(workers) and workers[0].ready
                         and bus.connected)
        async with probes:
            kv = await _prepare(bus, fence, settings, stop)
            if kv is None:
                return  # stopped before NATS was ready
            metrics = MirrorMetrics(metrics_registry)
            recorder = EventRecorder(
                api, source_for("mirror", worker_id),
                count=lambda outcome: metrics.events.labels(outcome).inc(),
            ) if api is not None else None
            workers.append(Worker(
                bus=bus, settings=settings.mirror, clients=clients, worker_id=worker_id,
                ledger=ledgers.KvBlobLedger(kv, holder=worker_id), fence=fence,
                secrets=functools.partial(_read_secret, api) if api is not None else None,
                metrics=metrics, stream_replicas=replicas, recorder=recorder))
            await workers[0].run(stop)


async def _prepare(bus: Bus, fence: Fence, settings: Settings,
                   stop: asyncio.Event) -> Records[BlobLocation] | None:
    """The blob ledger's bucket and the fence's, retried until NATS has them (a JetStream
    cluster still electing its leader answers with timeouts); None when stopped first."""
    delay = 0.5
    while True:
        try:
            kv = await ledgers.ensure_bucket(
                bus, ttl_seconds=settings.mirror.blob_ledger_ttl_seconds,
                replicas=settings.nats.stream_replicas)
            await fence.ensure()
        except RetryableError as exc:
            log.warning("mirror cannot prepare NATS yet: %s", exc)
            if await sleep_unless_stopped(stop, delay):
                return None
            delay = min(delay * 2, 10.0)
            continue
        return kv


SERVICE = Service(
    name="mirror", summary="clusterregistry mirror: copy requested images into the local registry.",
    serve=serve, kubeconfig_help="for pull secrets",
    identity_help="worker id (mirror.workerId, if set, when this is not)")
