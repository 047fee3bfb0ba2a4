"""A relay's world: kubesim (API only, or with controllers), a real nats-server, helpers to
run relays as tasks and to read back exactly what the stream holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats.js.errors
import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import schemas, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.config import RelaySettings
from clusterregistry.kube.clients import api_client
from clusterregistry.relay.metrics import RelayMetrics
from clusterregistry.relay.relaying import Relay
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster, ClusterSettings
from tests.world.nats import jetstream

NAMESPACE = "clusterregistry"


@dataclass
class Record:
    seq: int
    subject: str
    msg_id: str
    trace_id: str
    data: dict[str, Any]


@dataclass
class RunningRelay:
    relay: Relay
    task: asyncio.Task[None]
    stop: asyncio.Event
    bus: Bus
    metrics: RelayMetrics
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    async def shutdown(self) -> None:
        self.stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self.task, 30)
        await self.bus.close()

    def kill(self) -> None:
        """As close to SIGKILL as a task gets: no lease release, no flush."""
        self.task.cancel()
        self.relay.elector.leading = False

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return value or 0.0


@dataclass
class World:
    cluster: Cluster
    nats: NatsServer
    relays: list[RunningRelay] = field(default_factory=list)

    async def start_relay(self, identity: str = "relay-a", **overrides: Any) -> RunningRelay:
        settings = RelaySettings(**{
            "lease_duration_seconds": 3.0, "renew_deadline_seconds": 2.0,
            "retry_period_seconds": 0.5, "missing_resource_retry_seconds": 0.5,
            "batch_size": 200, "queue_size": 400, **overrides})
        bus = await connect([self.nats.url], name=identity)
        api = await api_client(str(self.cluster.kubeconfig))
        registry = CollectorRegistry()
        metrics = RelayMetrics(registry)
        relay = Relay(api=api, bus=bus, settings=settings, namespace=NAMESPACE,
                      identity=identity, metrics=metrics)
        stop = asyncio.Event()
        task = asyncio.create_task(relay.run(stop), name=identity)
        task.add_done_callback(lambda _t: asyncio.ensure_future(api.close()))
        running = RunningRelay(relay, task, stop, bus, metrics, registry)
        self.relays.append(running)
        return running

    async def relisted(self, *kinds: str) -> None:
        """Wait until the first relist of each kind has ended (the relay is watching)."""
        wanted = kinds or ("pod", "replicaset", "job", "daemonset", "statefulset")
        await self.wait_records(lambda rs: all(any(
            r.subject == subjects.relist(k) and r.data["phase"] == "end" for r in rs)
            for k in wanted), what=f"relists of {', '.join(wanted)}")

    async def records(self) -> list[Record]:
        """Everything in CLUSTERREGISTRY_KUBE, in stream order."""
        async with jetstream(self.nats.url) as js:
            info = await js.stream_info(subjects.KUBE_STREAM)
            out: list[Record] = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(subjects.KUBE_STREAM, seq)
                except nats.js.errors.NotFoundError:  # deleted by limits
                    continue
                headers = msg.headers or {}
                out.append(Record(seq, msg.subject, headers.get(subjects.MSG_ID_HEADER, ""),
                                  headers.get(subjects.TRACE_HEADER, ""),
                                  msgspec.json.decode(msg.data or b"{}")))
            return out

    async def wait_records(self, predicate: Callable[[list[Record]], bool], *,
                           timeout: float = 60, what: str = "stream contents") -> list[Record]:
        async def check() -> list[Record] | None:
            try:
                records = await self.records()
            except Exception:
                return None
            return records if predicate(records) else None

        try:
            return await wait_for(check, timeout=timeout, description=what)
        except TimeoutError:
            got = await self.records()
            summary = [(r.subject, r.data.get("type") or r.data.get("phase")) for r in got]
            raise AssertionError(f"timed out waiting for {what}; the stream holds "
                                 f"{len(got)} messages: {summary[-40:]}") from None


def events(records: list[Record], *, kind: str | None = None) -> list[schemas.KubeEvent]:
    out = []
    for record in records:
        if record.subject.endswith("._relist"):
            continue
        event = msgspec.convert(record.data, schemas.KubeEvent)
        if kind is None or event.kind == kind:
            out.append(event)
    return out


@pytest.fixture
async def world(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[World]:
    cluster = Cluster(tmp_path / "kube", ClusterSettings(controllers=False))
    await cluster.start()
    namespaces = cluster.api.lookup("", "v1", "namespaces")
    for name in (NAMESPACE, "nf"):
        await cluster.api.create(namespaces, {"metadata": {"name": name}})
    w = World(cluster, nats_server)
    try:
        yield w
    finally:
        for running in w.relays:
            await running.shutdown()
        await cluster.stop()


Factory = Callable[..., Awaitable[RunningRelay]]
