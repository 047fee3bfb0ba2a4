"""GC in `readOnlyMode: front` against real NATS and a real registry: the sweep waits for
every live registry front to refuse writes, never for a dead one, and the window it reports
is the one the fronts lived.

The fronts here are fakes reduced to their fence protocol (issue 15), each on its own NATS
connection as a front process would be: renew `front.<id>` every ttl/3; on seeing a `sweep`
lock, finish the writes in flight (`drain`), then write `readonly.<id>` naming the lock's
`acquired` and renew it every ttl/3; once the lock is gone, delete it (after `linger`: a
front that looks at the lock only now and then). `drain` and `linger` are the simulated
durations of a front's own work, not waits of the test's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.gc.collecting import Collector
from clusterregistry.gc.metrics import GcMetrics
from clusterregistry.gc.sweeping import SweepResult
from clusterregistry.schemas import FenceEntry
from clusterregistry_sandbox.supervising import wait_for
from tests.integration.gc.conftest import GcWorld, Image

pytestmark = pytest.mark.integration

TTL = 2.0  # the world's gc.lockTtlSeconds: the fence bucket's TTL


class FakeFront:
    """One registry front, as far as GC can see it: its presence and its acknowledgement."""

    def __init__(self, bus: Bus, front_id: str, *, drain: float = 0.0, linger: float = 0.0,
                 confirms: bool = True, poll: float = 0.02) -> None:
        self.id = front_id
        self.fence = Fence(bus, ttl_seconds=TTL, holder=front_id)
        self.drain, self.linger, self.confirms, self.poll = drain, linger, confirms, poll
        self.started = time.time()
        self.read_only_for: float | None = None  # the lock's `acquired` it acknowledged
        self.saw_sweep = asyncio.Event()
        # time.monotonic(): just before its acknowledgement is written (it refuses writes
        # from then on at the latest), and once its deletion is stored (writes again)
        self.acked_at: list[float] = []
        self.unacked_at: list[float] = []
        self._writing = asyncio.Lock()  # the acknowledgement: one write at a time
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ack_key(self) -> str:
        return subjects.fence_front_read_only(self.id)

    async def start(self) -> None:
        await self._presence()
        self._tasks = [asyncio.create_task(self._renew_presence()),
                       asyncio.create_task(self._renew_ack()),
                       asyncio.create_task(self._follow())]

    def kill(self) -> None:
        """Dies as with SIGKILL: nothing is cleaned up, its entries expire with the TTL."""
        for task in self._tasks:
            task.cancel()

    def check(self) -> None:
        """A fake that broke would make the test prove nothing: surface its error."""
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise AssertionError(f"fake front {self.id} failed") from task.exception()

    async def _presence(self) -> None:
        await self.fence.put_entry(subjects.fence_front(self.id), FenceEntry(
            holder=self.id, purpose="front", acquired=self.started, renewed=time.time()))

    async def _renew_presence(self) -> None:
        while True:
            await asyncio.sleep(TTL / 3)
            await self._presence()

    async def _acknowledge(self, acquired: float | None) -> None:
        async with self._writing:
            self.read_only_for = acquired
            await self.fence.put_entry(self.ack_key, None if acquired is None else FenceEntry(
                holder=self.id, purpose="read-only", acquired=acquired, renewed=time.time()))

    async def _renew_ack(self) -> None:
        while True:
            await asyncio.sleep(TTL / 3)
            async with self._writing:
                if self.read_only_for is not None:
                    await self.fence.put_entry(self.ack_key, FenceEntry(
                        holder=self.id, purpose="read-only", acquired=self.read_only_for,
                        renewed=time.time()))

    async def _follow(self) -> None:
        while True:
            lock = await self.fence.lock_holder()
            if lock is not None and lock.purpose.startswith("sweep"):  # GC is sweeping
                self.saw_sweep.set()
                if self.confirms and self.read_only_for != lock.acquired:
                    await asyncio.sleep(self.drain)  # its writes in flight finish
                    self.acked_at.append(time.monotonic())
                    await self._acknowledge(lock.acquired)
            elif self.read_only_for is not None:
                await asyncio.sleep(self.linger)  # it notices the lock gone this much later
                await self._acknowledge(None)
                self.unacked_at.append(time.monotonic())
            await asyncio.sleep(self.poll)


@contextlib.asynccontextmanager
async def fronts(world: GcWorld, *specs: dict[str, object]) -> AsyncIterator[list[FakeFront]]:
    """Started fake fronts, each on its own connection; killed and closed on the way out."""
    buses: list[Bus] = []
    started: list[FakeFront] = []
    try:
        for spec in specs:
            bus = await connect([world.nats.url], name=f"front-{len(buses)}")
            buses.append(bus)
            front = FakeFront(bus, **spec)  # type: ignore[arg-type]
            await front.start()
            started.append(front)
        yield started
        for front in started:
            front.check()
    finally:
        for front in started:
            front.kill()
        for bus in buses:
            await bus.close()


async def garbage(world: GcWorld) -> Image:
    """One unreferenced image past the grace period: its blobs are what the sweep frees."""
    return await world.add("src.example.io/app/dead:1", referenced=False, layer_sizes=(8192,))


def front_collector(world: GcWorld, metrics: CollectorRegistry, **overrides: Any
                    ) -> Collector:
    return world.collector(read_only_mode="front", metrics=GcMetrics(metrics), **overrides)


def record_sweeps(collector: Collector,
                  at_start: Callable[[], Awaitable[None]] | None = None
                  ) -> list[tuple[float, float]]:
    """The sweeper's (start, end) in time.monotonic(); `at_start` runs as it starts."""
    sweeper = collector.sweeper
    assert sweeper is not None
    real = sweeper.sweep
    spans: list[tuple[float, float]] = []

    async def sweep(*, run: str) -> SweepResult:
        started = time.monotonic()
        if at_start is not None:
            await at_start()
        result = await real(run=run)
        spans.append((started, time.monotonic()))
        return result

    sweeper.sweep = sweep  # type: ignore[method-assign]
    return spans


async def test_sweeps_only_once_both_fronts_acknowledged_and_reports_their_window(
    gc_world: GcWorld,
) -> None:
    """Front b drains for 1.5 s before it acknowledges, front a lingers 0.8 s after the
    release before it writes again: the window starts at b's acknowledgement and ends at
    a's, not at GC's relabel and release (which would be about 0.7 s longer)."""
    world = gc_world
    image = await garbage(world)
    metrics = CollectorRegistry()
    collector = front_collector(world, metrics, read_only_wait_seconds=20.0)
    await collector.ensure()
    observer = Fence(world.bus, ttl_seconds=TTL, holder="observer")
    acks_at_sweep: dict[str, FenceEntry] = {}
    lock_at_sweep: list[FenceEntry | None] = []

    async def look() -> None:
        acks_at_sweep.update(await observer.fronts_read_only())
        lock_at_sweep.append(await observer.lock_holder())

    sweeps = record_sweeps(collector, at_start=look)
    async with fronts(world, {"front_id": "front-a", "linger": 0.8},
                      {"front_id": "front-b", "drain": 1.5}) as (a, b):
        result = await asyncio.wait_for(collector.run(), 60)
        assert result.event == "finished", result.message
        for blob in image.blobs:
            assert not await world.blob_exists(blob)  # it did sweep

        # swept only once both had acknowledged this very lock
        (sweep_started, sweep_ended), = sweeps
        lock = lock_at_sweep[0]
        assert lock is not None and lock.purpose.startswith("sweep")
        assert set(acks_at_sweep) == {a.ack_key, b.ack_key}
        assert all(ack.acquired == lock.acquired for ack in acks_at_sweep.values())
        assert max(a.acked_at + b.acked_at) < sweep_started
        # and both held on until it was over (a: 0.8 s after the release)
        assert len(a.unacked_at) == len(b.unacked_at) == 1
        assert sweep_ended < min(a.unacked_at + b.unacked_at)
        # the run returned only once the last acknowledgement was gone
        assert await observer.fronts_read_only() == {}

    events = await world.events()
    swept = [e for e in events if e["event"] == "swept"]
    assert len(swept) == 1
    window = swept[0]["readOnlySeconds"]
    assert result.read_only_seconds == window
    assert metrics.get_sample_value("clusterregistry_gc_last_read_only_seconds") == window
    assert metrics.get_sample_value("clusterregistry_gc_read_only_seconds_sum") == window
    # the fronts' window: from the last acknowledgement to the last one gone, within GC's
    # polling (50 ms) and a few round trips on a busy machine
    fronts_window = max(a.unacked_at + b.unacked_at) - max(a.acked_at + b.acked_at)
    assert window >= sweep_ended - sweep_started
    assert abs(window - fronts_window) < 0.3, (window, fronts_window)


async def test_a_front_that_never_acknowledges_means_no_sweep_and_is_named(
    gc_world: GcWorld,
) -> None:
    world = gc_world
    image = await garbage(world)
    metrics = CollectorRegistry()
    collector = front_collector(world, metrics, read_only_wait_seconds=1.5)
    await collector.ensure()
    sweeps = record_sweeps(collector)
    observer = Fence(world.bus, ttl_seconds=TTL, holder="observer")
    async with fronts(world, {"front_id": "front-mute", "confirms": False},
                      {"front_id": "front-willing"}) as (mute, willing):
        result = await asyncio.wait_for(collector.run(), 60)
        assert result.event == "failed"
        assert "front-mute" in result.message and "not sweeping" in result.message
        assert "front-willing" not in result.message  # it did confirm
        assert mute.saw_sweep.is_set() and len(willing.acked_at) == 1
        # released on the way out: the willing front writes again
        await wait_for(lambda: _no_acks(observer), timeout=10,
                       description="the willing front's acknowledgement gone")
        assert await observer.lock_holder() is None
    assert sweeps == []
    for blob in image.blobs:
        assert await world.blob_exists(blob)  # nothing swept
    kinds = [e["event"] for e in await world.events()]
    assert "swept" not in kinds and kinds[-1] == "failed"
    assert metrics.get_sample_value("clusterregistry_gc_last_read_only_seconds") == 0


async def test_a_front_that_dies_while_gc_waits_is_not_waited_for(gc_world: GcWorld) -> None:
    """Front b dies (no clean-up) while draining for the sweep: GC sweeps once its presence
    is older than the TTL, long before readOnlyWaitSeconds, with a alone confirmed."""
    world = gc_world
    image = await garbage(world)
    metrics = CollectorRegistry()
    collector = front_collector(world, metrics, read_only_wait_seconds=15.0)
    await collector.ensure()
    sweeps = record_sweeps(collector)
    async with fronts(world, {"front_id": "front-a"},
                      {"front_id": "front-b", "drain": 3600.0}) as (a, b):
        running = asyncio.create_task(collector.run())
        try:
            await asyncio.wait_for(b.saw_sweep.wait(), 30)
            b.kill()
            died = time.monotonic()
            result = await asyncio.wait_for(running, 60)
        finally:
            running.cancel()
        assert result.event == "finished", result.message
        assert len(sweeps) == 1
        # once its presence is older than the TTL (it renewed it at most ttl/3 before)
        assert sweeps[0][0] - died < TTL + 2.0
        assert len(a.acked_at) == 1 and b.acked_at == []
    for blob in image.blobs:
        assert not await world.blob_exists(blob)


async def test_a_stale_presence_left_without_a_delete_marker_is_not_waited_for(
    gc_world: GcWorld,
) -> None:
    """An entry still stored but not renewed within the TTL (what an expiry without a delete
    marker leaves on some read paths) is a dead front. readOnlyWaitSeconds is shorter than
    the TTL here, so the server's own expiry of it cannot be what lets GC sweep."""
    world = gc_world
    await garbage(world)
    metrics = CollectorRegistry()
    collector = front_collector(world, metrics, read_only_wait_seconds=1.0)
    await collector.ensure()
    sweeps = record_sweeps(collector)
    ghost = Fence(world.bus, ttl_seconds=TTL, holder="front-ghost")
    now = time.time()
    async with fronts(world, {"front_id": "front-a"}) as (a,):
        await ghost.put_entry(subjects.fence_front("front-ghost"), FenceEntry(
            holder="front-ghost", purpose="front", acquired=now - 60, renewed=now - 2 * TTL))
        assert subjects.fence_front("front-ghost") in await ghost.fronts()  # still stored
        result = await asyncio.wait_for(collector.run(), 60)
        assert result.event == "finished", result.message
        assert len(sweeps) == 1 and len(a.acked_at) == 1


async def test_no_front_alive_sweeps_at_once(
    gc_world: GcWorld, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="clusterregistry.gc.collecting")
    world = gc_world
    image = await garbage(world)
    metrics = CollectorRegistry()
    collector = front_collector(world, metrics, read_only_wait_seconds=1.0)
    await collector.ensure()
    sweeps = record_sweeps(collector)
    result = await asyncio.wait_for(collector.run(), 60)
    assert result.event == "finished", result.message
    assert len(sweeps) == 1
    for blob in image.blobs:
        assert not await world.blob_exists(blob)
    assert any("no registry front is alive" in r.getMessage() for r in caplog.records)
    swept = [e for e in await world.events() if e["event"] == "swept"]
    assert len(swept) == 1 and 0 < swept[0]["readOnlySeconds"] == result.read_only_seconds


async def _no_acks(fence: Fence) -> bool:
    return await fence.fronts_read_only() == {}
