"""The services' world for tracker and reconciler tests: kubesim, a real nats-server, the
real relay, trackers and reconcilers run as tasks, and `FakeMirrorWorker`, a test double of
the mirror (issue 6) that answers requests from the real work queue without copying.

Helpers read back exactly what the system stored: owner records from KV, Artifacts from
kubesim, Artifact records from KV.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.keyvalues import open_records
from clusterregistry.bus.pulling import ConsumerSpec, Pulled, Puller
from clusterregistry.bus.streams import publish
from clusterregistry.config import ReconcilerSettings, RelaySettings, TrackerSettings
from clusterregistry.errors import RetryableError
from clusterregistry.kinds import ARTIFACT_GROUP, ARTIFACT_PLURAL, ARTIFACT_VERSION
from clusterregistry.kube.clients import api_client
from clusterregistry.reconciler.metrics import ReconcilerMetrics
from clusterregistry.reconciler.reconciling import Reconciler
from clusterregistry.relay.metrics import RelayMetrics
from clusterregistry.relay.relaying import Relay
from clusterregistry.schemas import MirrorRequest, MirrorResult, OwnerRecord
from clusterregistry.tracker.metrics import TrackerMetrics
from clusterregistry.tracker.tracking import Tracker
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster

NAMESPACE = "clusterregistry"
LOCAL_REGISTRY = "edge.local:5000"


@dataclass
class Running:
    """A service run as a task of the test's loop."""

    name: str
    task: asyncio.Task[None]
    stop: asyncio.Event
    bus: Bus
    registry: CollectorRegistry
    service: Any
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def shutdown(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 30)
        await self._close()

    async def kill(self) -> None:
        """As close to SIGKILL as a task gets: no ack, no flush, the connection dropped."""
        # cancelled again until it ends: Python 3.11's asyncio.wait_for can swallow a
        # cancellation that arrives as its inner future completes (fixed in 3.12)
        while not self.task.done():
            self.task.cancel()
            await asyncio.wait({self.task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self.task.result()
        await self.bus.close(drain_timeout=0)  # nothing buffered is delivered
        await self._close()

    async def _close(self) -> None:
        for close in self.closers:
            with contextlib.suppress(Exception):
                await close()
        self.closers.clear()
        with contextlib.suppress(Exception):
            await self.bus.close()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def digest_of(source: str, generation: int = 0) -> str:
    return "sha256:" + hashlib.sha256(f"{source}#{generation}".encode()).hexdigest()


Respond = Callable[[MirrorRequest], MirrorResult | None]


def succeed(request: MirrorRequest) -> MirrorResult:
    return MirrorResult(artifact=request.artifact, generation=request.generation,
                        source=request.source, destination=request.destination, ok=True,
                        digest=digest_of(request.source), size=1000 + len(request.source),
                        platforms=["linux/amd64"], attempt=request.attempt, worker="fake")


class FakeMirrorWorker:
    """A test double of the mirror worker: takes requests from CLUSTERREGISTRY_MIRROR through
    the mirror's durable consumer and publishes a MirrorResult decided by `respond` (None:
    never answer). It copies nothing."""

    def __init__(self, bus: Bus, respond: Respond = succeed) -> None:
        self.bus = bus
        self.respond = respond
        self.requests: list[MirrorRequest] = []
        self.puller = Puller(bus, ConsumerSpec(
            stream=subjects.MIRROR_STREAM, durable=subjects.MIRROR_CONSUMER,
            filter_subject=subjects.MIRROR_REQUEST, ack_wait=30.0))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async def started() -> bool:
            await self.puller.start()  # RetryableError until the reconciler made the stream
            return True

        await wait_for(started, timeout=30, description="the mirror stream",
                       retry_on=(RetryableError,))
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for msg in await self.puller.fetch(16, timeout=0.5):
                await self._answer(msg)

    async def _answer(self, msg: Pulled) -> None:
        request = schemas.mirror_request_decoder.decode(msg.data)
        self.requests.append(request)
        result = self.respond(request)
        if result is not None:
            await publish(self.bus, subjects.mirror_result(request.artifact),
                          schemas.encode(result))
        await msg.ack()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.puller.stop()


@dataclass
class Services:
    cluster: Cluster
    nats: NatsServer
    running: list[Running] = field(default_factory=list)
    mirrors: list[FakeMirrorWorker] = field(default_factory=list)
    _reader: Bus | None = None
    _observer: Client | None = None

    # -- starting services -------------------------------------------------------------------

    async def _bus(self, name: str) -> Bus:
        return await connect([self.nats.url], name=name)

    async def start_relay(self, identity: str = "relay-a", **overrides: Any) -> Running:
        settings = RelaySettings(**{
            "lease_duration_seconds": 3.0, "renew_deadline_seconds": 2.0,
            "retry_period_seconds": 0.5, "missing_resource_retry_seconds": 0.5,
            "batch_size": 200, "queue_size": 400, **overrides})
        bus = await self._bus(identity)
        api = await api_client(str(self.cluster.kubeconfig))
        registry = CollectorRegistry()
        relay = Relay(api=api, bus=bus, settings=settings, namespace=NAMESPACE,
                      identity=identity, metrics=RelayMetrics(registry))
        stop = asyncio.Event()
        running = Running(identity, asyncio.create_task(relay.run(stop), name=identity), stop,
                          bus, registry, relay, [api.close])
        self.running.append(running)
        return running

    async def start_tracker(self, identity: str | None = None, *, early_loading: bool = True,
                            local_registry: str = LOCAL_REGISTRY, **overrides: Any) -> Running:
        settings = TrackerSettings(**{"ack_wait_seconds": 3.0, "retry_initial_seconds": 0.1,
                                      "retry_max_seconds": 1.0, **overrides})
        bus = await self._bus(f"tracker-{identity}")
        registry = CollectorRegistry()
        tracker = Tracker(bus=bus, settings=settings, early_loading=early_loading,
                          local_registry=local_registry, identity=identity,
                          metrics=TrackerMetrics(registry))
        stop = asyncio.Event()
        running = Running(f"tracker-{identity}", asyncio.create_task(tracker.run(stop)), stop,
                          bus, registry, tracker)
        self.running.append(running)
        return running

    async def start_reconciler(self, identity: str | None = None, *,
                               local_registry: str = LOCAL_REGISTRY, **overrides: Any
                               ) -> Running:
        settings = ReconcilerSettings(**{"resync_seconds": 30.0, "retry_initial_seconds": 0.5,
                                         "retry_max_seconds": 2.0, **overrides})
        bus = await self._bus(f"reconciler-{identity}")
        api = await api_client(str(self.cluster.kubeconfig))
        registry = CollectorRegistry()
        reconciler = Reconciler(api=api, bus=bus, settings=settings,
                                local_registry=local_registry, identity=identity,
                                metrics=ReconcilerMetrics(registry))
        stop = asyncio.Event()
        running = Running(f"reconciler-{identity}",
                          asyncio.create_task(reconciler.run(stop)), stop, bus, registry,
                          reconciler, [api.close])
        self.running.append(running)
        return running

    async def start_mirror(self, respond: Respond = succeed) -> FakeMirrorWorker:
        worker = FakeMirrorWorker(await self._bus("fake-mirror"), respond)
        await worker.start()
        self.mirrors.append(worker)
        return worker

    async def start_all(self, *, early_loading: bool = True, **reconciler: Any
                        ) -> tuple[Running, Running, FakeMirrorWorker]:
        await self.start_relay()
        await self.relisted()
        tracker = await self.start_tracker(early_loading=early_loading)
        reconciler_ = await self.start_reconciler(**reconciler)
        mirror = await self.start_mirror()
        return tracker, reconciler_, mirror

    async def close(self) -> None:
        for worker in self.mirrors:
            await worker.stop()
            await worker.bus.close()
        for running in reversed(self.running):
            await running.shutdown()
        if self._reader is not None:
            await self._reader.close()
        if self._observer is not None:
            await self._observer.close()

    # -- reading back ------------------------------------------------------------------------

    async def reader(self) -> Bus:
        if self._reader is None:
            self._reader = await self._bus("reader")
        return self._reader

    async def observer(self) -> JetStreamContext:
        """A bare nats-py client of the test's own, to look at streams and consumers as an
        outside client would (the services' Bus keeps its nats-py objects to itself)."""
        if self._observer is None:
            self._observer = await nats.connect(self.nats.url)
        return self._observer.jetstream()

    async def relisted(self, *kinds: str) -> None:
        """Until the relay's first relist of each kind has ended (the relay is watching)."""
        wanted = kinds or ("pod", "replicaset", "job", "daemonset", "statefulset")

        async def done() -> bool:
            js = await self.observer()
            for kind in wanted:
                try:
                    await js.get_last_msg(subjects.KUBE_STREAM, subjects.relist(kind))
                except nats.errors.Error:  # no such message (or stream) yet
                    return False
            return True

        await wait_for(done, timeout=60, description=f"relists of {', '.join(wanted)}")

    async def refs(self) -> dict[str, OwnerRecord]:
        """Every live owner record in KV `clusterregistry-refs`."""
        records = await open_records(await self.reader(), subjects.REFS_BUCKET,
                                     schemas.owner_record_decoder.decode)
        if records is None:
            return {}
        snapshot = await records.snapshot()
        return {uid: v.value for uid, v in snapshot.items() if v.value is not None}

    async def artifact_records(self) -> dict[str, schemas.ArtifactRecord]:
        records = await open_records(await self.reader(), subjects.ARTIFACTS_BUCKET,
                                     schemas.artifact_record_decoder.decode)
        if records is None:
            return {}
        snapshot = await records.snapshot()
        return {name: v.value for name, v in snapshot.items() if v.value is not None}

    def artifacts(self) -> dict[str, dict[str, Any]]:
        """Every Artifact kubesim holds, by source."""
        resource = self.cluster.api.lookup(ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL)
        return {a["spec"]["sourceArtifact"]: a
                for a in self.cluster.api.list(resource)["items"]}

    def refs_by_source(self) -> dict[str, int]:
        """REFS as the Artifacts show them, by source."""
        return {source: int(((a.get("status") or {}).get("references") or {}).get("count", -1))
                for source, a in self.artifacts().items()}

    async def until(self, check: Callable[[], Any], *, what: str, timeout: float = 60) -> Any:
        """Wait until `check()` (a value or an awaitable) is truthy; return it."""

        async def probe() -> Any:
            value = check()
            if isinstance(value, Awaitable):
                value = await value
            return value

        try:
            return await wait_for(probe, timeout=timeout, description=what,
                                  retry_on=(RetryableError,))
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what}; artifacts: {self._summary()}") from None

    def _summary(self) -> list[tuple[str, str, int]]:
        return [(source, (a.get("status") or {}).get("phase", ""),
                 ((a.get("status") or {}).get("references") or {}).get("count", -1))
                for source, a in self.artifacts().items()]


def images_by_owner(refs: dict[str, OwnerRecord]) -> dict[tuple[str, str, str], list[str]]:
    """(kind, namespace, name) -> images: what tests compare against."""
    return {(r.kind, r.namespace, r.name): r.images for r in refs.values()}


def decode_event(data: bytes) -> schemas.KubeEvent:
    return msgspec.json.decode(data, type=schemas.KubeEvent)
