"""The front process: settings in, the registry API on `front.port`, probes and metrics out.

It needs the registry behind it (`registryEndpoint`) and, for what makes it
more than a proxy, NATS: the fence (read-only windows), the flights bucket
(one fetch across replicas) and the mirror's blob ledger. Without NATS it still
serves hits and misses, alone: a front that cannot reach NATS must not stop
kubelets pulling. Readiness says whether it can reach the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry.bus import flights as flights_bucket
from clusterregistry.bus import ledgers
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.flights import Flights
from clusterregistry.bus.ledgers import KvBlobLedger
from clusterregistry.config import Settings, parse_quantity
from clusterregistry.errors import ClusterRegistryError, RetryableError
from clusterregistry.front.fetching import Fetcher
from clusterregistry.front.metrics import FrontMetrics
from clusterregistry.front.proxying import Front
from clusterregistry.front.spools import SpoolDir
from clusterregistry.front.windows import Window
from clusterregistry.oci.clients import RegistryClients, pacer
from clusterregistry.runtime.lifecycle import cancel_and_wait, sleep_unless_stopped
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import Service
from clusterregistry.runtime.running import identity as default_identity
from clusterregistry.sources import SourceRules

log = logging.getLogger(__name__)


def advertised(settings: Settings, port: int) -> str:
    """Where peers reach this replica: the setting, else the pod IP, else loopback."""
    if settings.front.advertise_url:
        return settings.front.advertise_url.rstrip("/")
    host = os.environ.get("POD_IP") or "127.0.0.1"
    return f"http://{host}:{port}"


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    identity: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
    started: asyncio.Future[int] | None = None,
) -> None:
    """Serve until `stop`; `started` (tests) gets the bound port."""
    del kubeconfig  # the front never talks to Kubernetes
    front_settings = settings.front
    front_id = identity or front_settings.front_id or default_identity()
    metrics = FrontMetrics(metrics_registry)
    webhook = settings.webhook
    rules = SourceRules(settings.local_registry, allow_hosts=webhook.allow_hosts,
                        deny_hosts=webhook.deny_hosts,
                        allow_repositories=webhook.allow_repositories,
                        deny_repositories=webhook.deny_repositories)
    async with contextlib.AsyncExitStack() as closing:
        clients = RegistryClients(settings.mirror, local_registry=settings.local_registry,
                                  registry_endpoint=settings.registry_endpoint,
                                  read_timeout=front_settings.source_timeout_seconds,
                                  retry_attempts=1, shape_paced_sockets=False)
        closing.push_async_callback(clients.close)
        registry = clients.destination(settings.registry)
        scheme = "http" if settings.mirror.local_plain_http else "https"
        session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                          sock_read=front_settings.source_timeout_seconds))
        closing.push_async_callback(session.close)
        spools = SpoolDir(Path(front_settings.spool_dir),
                          limit=parse_quantity(front_settings.spool_limit))
        # the mirror's bandwidth limit, for fetches only the mirror asked for
        fetcher = Fetcher(settings=front_settings, clients=clients, registry=registry,
                          spools=spools, metrics=metrics, peers=session,
                          pacer=pacer(settings.mirror))
        closing.push_async_callback(fetcher.close)
        window = Window(None, front_id=front_id, metrics=metrics)
        front = Front(upstream=f"{scheme}://{settings.registry}",
                      local_registry=settings.local_registry, rules=rules, fetcher=fetcher,
                      window=window, metrics=metrics, session=session,
                      storage=Path(front_settings.storage_path) if front_settings.storage_path
                      else None)
        runner = web.AppRunner(front.app, access_log=None, handle_signals=False)
        await runner.setup()
        closing.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, front_settings.host, front_settings.port,
                           reuse_address=True)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("registry front %s on %s:%d, in front of %s", front_id, front_settings.host,
                 port, settings.registry)

        probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                             registry=metrics_registry)
        registry_up = asyncio.Event()
        probes.add_check("registry", registry_up.is_set)
        # ready once NATS was tried: joined (one fetch across replicas) or found away (serving
        # alone, since a front must not stop pulls for want of NATS); a replica that took
        # traffic before it joined would fetch what a peer is fetching already
        nats_tried = asyncio.Event()
        probes.add_check("nats-tried", nats_tried.is_set)
        await closing.enter_async_context(probes)
        tasks = [asyncio.create_task(_watch_registry(registry_up, front.upstream, session,
                                                     stop), name="front-registry")]
        tasks.append(asyncio.create_task(_with_nats(
            settings, stop, front_id=front_id, peer=advertised(settings, port),
            fetcher=fetcher, front=front, metrics=metrics, tried=nats_tried), name="front-nats"))
        if started is not None and not started.done():
            started.set_result(port)
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(*tasks)


async def _watch_registry(up: asyncio.Event, upstream: str, session: aiohttp.ClientSession,
                          stop: asyncio.Event) -> None:
    """Readiness: the registry behind answers `/v2/` (any status: it is there)."""
    while not stop.is_set():
        try:
            async with asyncio.timeout(5), session.get(f"{upstream}/v2/") as response:
                await response.read()
            up.set()
        except (aiohttp.ClientError, TimeoutError):
            up.clear()
        if await sleep_unless_stopped(stop, 2.0):
            return


async def _with_nats(settings: Settings, stop: asyncio.Event, *, front_id: str, peer: str,
                     fetcher: Fetcher, front: Front, metrics: FrontMetrics,
                     tried: asyncio.Event) -> None:
    """Connect to NATS (retrying) and then join the fence and the flights; `tried` is set
    after the first attempt, whatever its outcome."""
    delay = 0.5
    bus: Bus | None = None
    while not stop.is_set():
        try:
            bus = await connect(settings.nats.servers, name=f"clusterregistry-front-{front_id}")
            replicas = settings.nats.stream_replicas
            fence = Fence(bus, ttl_seconds=settings.gc.lock_ttl_seconds, holder=front_id,
                          replicas=replicas)
            await fence.ensure()
            records = await flights_bucket.ensure(
                bus, ttl_seconds=settings.front.flights_ttl_seconds, replicas=replicas)
            blobs = await ledgers.ensure_bucket(
                bus, ttl_seconds=settings.mirror.blob_ledger_ttl_seconds, replicas=replicas)
            break
        except (RetryableError, ClusterRegistryError, OSError) as exc:
            log.warning("front %s cannot use NATS yet (%s): serving alone", front_id, exc)
            tried.set()
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.close()
                bus = None
            if await sleep_unless_stopped(stop, delay):
                return
            delay = min(delay * 2, 10.0)
    if bus is None:
        return
    try:
        fetcher.fence = fence
        fetcher.flights = Flights(records, holder=front_id, peer=peer,
                                  stale_seconds=settings.front.claim_stale_seconds)
        fetcher.ledger = KvBlobLedger(blobs, holder=front_id)
        window = Window(fence, front_id=front_id, metrics=metrics)
        front.window = window
        tried.set()
        await window.run(stop)
    finally:
        with contextlib.suppress(Exception):
            await bus.close()


SERVICE = Service(
    name="front",
    summary="clusterregistry front: the edge registry's one door (hits, misses, read-only).",
    serve=serve, identity_help="front id (front.frontId, if set, when this is not)")
