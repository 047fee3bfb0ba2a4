"""The GC process: runs on the cron schedule and on request, probes and metrics.

Several replicas may run (HA): each schedules its own runs, and GC's lock makes
all but one of them a `skipped` run, so "never two at once" holds across
replicas without a leader election. On-demand runs arrive as NATS requests on
`subjects.GC_RUN_REQUEST` in a queue group, so exactly one replica answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

from prometheus_client import REGISTRY, CollectorRegistry

from clusterregistry import subjects
from clusterregistry.bus import replying
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.bus.replying import Responder
from clusterregistry.config import Settings
from clusterregistry.errors import RetryableError
from clusterregistry.gc.collecting import Collector
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.gc.scheduling import Schedule
from clusterregistry.gc.sweeping import (
    JobSweeper,
    SubprocessSweeper,
    Sweeper,
    find_registry_binary,
)
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.kube.events import EventRecorder, ObjectRef, source_for
from clusterregistry.oci.registries import RegistryClient
from clusterregistry.runtime.lifecycle import cancel_and_wait, sleep_unless_stopped
from clusterregistry.runtime.probes import ProbeServer
from clusterregistry.runtime.running import Service
from clusterregistry.runtime.running import identity as default_identity
from clusterregistry.schemas import (
    GcEvent,
    GcRunRequest,
    encode,
    gc_event_decoder,
    gc_run_request_decoder,
)

log = logging.getLogger(__name__)


def _kube_configured(kubeconfig: str | None) -> bool:
    return bool(kubeconfig or os.environ.get("KUBECONFIG")
                or os.environ.get("KUBERNETES_SERVICE_HOST"))


def registry_client(settings: Settings) -> RegistryClient:
    url = settings.gc.registry_url or f"http://{settings.local_registry}"
    plain = url.startswith("http://")
    host = url.split("://", 1)[1].rstrip("/")
    return RegistryClient(host, plain_http=plain, actions="*")


async def build(settings: Settings, bus: Bus, *, kubeconfig: str | None, holder: str,
                metrics: GcMetrics | None) -> tuple[Collector, list[object]]:
    """A Collector wired from settings, and what must be closed after it."""
    gc = settings.gc
    closing: list[object] = []
    api = None
    artifacts = None
    if _kube_configured(kubeconfig):
        api = await api_client(kubeconfig)
        closing.append(api)
        artifacts = Artifacts(api)
    else:
        log.warning("no Kubernetes API configured: GC works from the KV records only and "
                    "leaves Artifact objects alone")
    recorder: EventRecorder | None = None
    if api is not None:
        recorder = EventRecorder(api, source_for("gc", holder), count=(
            (lambda outcome: metrics.events.labels(outcome).inc()) if metrics is not None
            else None))
        closing.append(recorder)
    sweeper: Sweeper | None = None
    if gc.sweep_mode == "subprocess":
        sweeper = SubprocessSweeper(binary=find_registry_binary(gc.registry_binary),
                                    config_path=gc.registry_config_path,
                                    timeout=gc.sweep_timeout_seconds)
    elif gc.sweep_mode == "job":
        if api is None:
            raise RetryableError("gc.sweepMode job needs the Kubernetes API")
        sweeper = JobSweeper(api, namespace=settings.namespace, image=gc.job_image,
                             volume_claim=gc.job_volume_claim, config_map=gc.job_config_map,
                             storage_path=gc.storage_path, timeout=gc.sweep_timeout_seconds,
                             node_name=os.environ.get("REGISTRY_NODE_NAME", ""))
    registry = registry_client(settings)
    closing.append(registry)
    fence = Fence(bus, ttl_seconds=gc.lock_ttl_seconds, holder=holder,
                  replicas=settings.nats.stream_replicas)
    collector = Collector(
        bus=bus, fence=fence, registry=registry, settings=gc,
        schedule=Schedule(settings.cluster_registry.cluster_registry_gc_cadence,
                          settings.cluster_registry.cluster_registry_gc_threshold),
        storage_bytes=settings.storage_bytes, sweeper=sweeper, artifacts=artifacts,
        metrics=metrics, holder=holder, stream_replicas=settings.nats.stream_replicas,
        recorder=recorder, run_object=run_object(settings, holder))
    return collector, closing


def run_object(settings: Settings, holder: str) -> ObjectRef:
    """What a run's Events (ReadOnlyWindow, Collected, GcFailed) are about: GC's own Pod.

    A run is this process's act, and its Pod is the one object GC can name exactly without
    a right to read anything: name, namespace and uid come from the downward API
    (POD_NAME, POD_NAMESPACE, POD_UID), so `kubectl describe pod` shows them and `kubectl
    get events -n clusterregistry` lists them beside the Deployment's. GC has no Kubernetes
    Lease (its lock is in NATS KV), and its Deployment's uid would need `get deployments`.
    Outside a cluster (the sandbox) the Pod is named by the holder, without a uid.
    """
    return ObjectRef(api_version="v1", kind="Pod",
                     name=os.environ.get("POD_NAME") or holder,
                     namespace=os.environ.get("POD_NAMESPACE") or settings.namespace,
                     uid=os.environ.get("POD_UID", ""))


async def _close(closing: list[object]) -> None:
    for item in reversed(closing):
        close = getattr(item, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    *,
    kubeconfig: str | None = None,
    identity: str | None = None,
    probe_host: str | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> None:
    holder = identity or default_identity()
    bus = await connect(settings.nats.servers, name="clusterregistry-gc")
    metrics = GcMetrics(metrics_registry)
    metrics.threshold_percent.set(settings.cluster_registry.cluster_registry_gc_threshold)
    collector, closing = await build(settings, bus, kubeconfig=kubeconfig, holder=holder,
                                     metrics=metrics)
    probes = ProbeServer(probe_host or settings.probe_host, settings.probe_port,
                         registry=metrics_registry)
    ready = asyncio.Event()
    probes.add_check("nats", lambda: ready.is_set() and bus.connected)
    await probes.start()

    async def on_request(data: bytes) -> bytes:
        try:
            request = gc_run_request_decoder.decode(data or b"{}")
        except Exception as exc:
            return encode(GcEvent(run="", event="failed", time=time.time(),
                                  message=f"bad request: {exc}"))
        log.info("gc run requested by %s", request.requested_by or "someone")
        return encode(await collector.run(dry_run=request.dry_run, force=request.force))

    responder = Responder(bus, subjects.GC_RUN_REQUEST, queue=subjects.GC_QUEUE_GROUP,
                          handle=on_request)
    try:
        while not stop.is_set():
            try:
                await collector.ensure()
                break
            except RetryableError as exc:
                log.warning("gc cannot prepare its stream and bucket yet: %s", exc)
                await sleep_unless_stopped(stop, 2.0)
        if isinstance(collector.sweeper, JobSweeper):
            # a sweep Job of a GC killed mid-sweep would go on after its lock expired
            await collector.sweeper.cleanup()
        await responder.start()
        ready.set()
        await _schedule_loop(collector, stop)
    finally:
        await responder.stop()
        await cancel_and_wait(*responder.running)
        await probes.stop()
        await _close(closing)
        await bus.close()


async def _schedule_loop(collector: Collector, stop: asyncio.Event) -> None:
    schedule = collector.schedule
    if not schedule.enabled:
        log.info("clusterRegistryGCCadence is empty: scheduled GC is off (on-demand only)")
        await stop.wait()
        return
    while not stop.is_set():
        due = schedule.next_run(time.time())
        assert due is not None
        log.info("next scheduled gc run at %s",
                 time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due)))
        if await sleep_unless_stopped(stop, max(0.0, due - time.time())):
            return
        await collector.run()


async def request_run(settings: Settings, *, dry_run: bool, force: bool,
                      timeout: float) -> GcEvent:
    """Ask a running GC (any replica) for a run and wait for its last event."""
    bus = await connect(settings.nats.servers, name="clusterregistry-cli",
                        first_connect_timeout=10)
    try:
        request = GcRunRequest(dry_run=dry_run, force=force,
                               requested_by=f"cli@{socket.gethostname()}")
        try:
            reply = await replying.request(bus, subjects.GC_RUN_REQUEST, encode(request),
                                           timeout=timeout)
        except RetryableError as exc:
            raise RetryableError(
                f"no GC answered on {subjects.GC_RUN_REQUEST} within {timeout:g}s ({exc}); "
                "is the gc process running? (--in-process runs one here)") from exc
        return gc_event_decoder.decode(reply)
    finally:
        await bus.close()


async def run_in_process(settings: Settings, *, dry_run: bool, force: bool,
                         kubeconfig: str | None = None) -> GcEvent:
    """One run in this process (the lock still keeps it apart from a running GC)."""
    bus = await connect(settings.nats.servers, name="clusterregistry-cli")
    collector, closing = await build(settings, bus, kubeconfig=kubeconfig,
                                     holder=f"cli-{default_identity()}",
                                     metrics=GcMetrics(CollectorRegistry()))
    try:
        await collector.ensure()
        return await collector.run(dry_run=dry_run, force=force)
    finally:
        await _close(closing)
        await bus.close()


SERVICE = Service(
    name="gc",
    summary="clusterregistry gc: garbage collection of the edge registry, on a schedule and "
            "on request.",
    serve=serve, kubeconfig_help="for Artifacts and sweep Jobs; without one, KV records only",
    identity_help="fence holder identity")
