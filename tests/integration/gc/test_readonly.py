"""The registry supervisor's follower against real NATS: read-only exactly while GC's lock
says sweep, acknowledged; a switch that fails is undone and never acknowledged."""

from __future__ import annotations

import asyncio

import pytest

from clusterregistry.bus.connecting import connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.gc.readonly import follow
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import wait_for

pytestmark = pytest.mark.integration


async def test_follower_switches_with_the_lock_and_undoes_a_failed_switch(
    nats_server: NatsServer,
) -> None:
    bus = await connect([nats_server.url], name="t")
    gc = Fence(bus, ttl_seconds=2, holder="gc", poll_interval=0.05)
    supervisor = Fence(bus, ttl_seconds=2, holder="supervisor", poll_interval=0.05)
    await gc.ensure()
    calls: list[bool] = []
    failures = [True]  # the first switch to read-only breaks
    windows: list[float] = []

    async def switch(read_only: bool) -> None:
        calls.append(read_only)
        if read_only and failures:
            failures.pop()
            raise RuntimeError("registry would not start read-only")

    stop = asyncio.Event()
    following = asyncio.create_task(follow(supervisor, switch, stop, name="edge",
                                           poll_interval=0.02, on_window=windows.append))

    async def calls_are(expected: list[bool]) -> bool:
        return calls == expected

    try:
        async with gc.exclusive(purpose="gc r1", wait_timeout=5) as hold:
            await asyncio.sleep(0.2)
            assert calls == []  # holding the lock to delete manifests: still read-write
            await gc.relabel(hold, "sweep r1")
            await wait_for(lambda: calls_are([True, False]), timeout=10,
                           description="the failed switch undone")
            assert await gc.read_only_state() is None  # never acknowledged
            await asyncio.sleep(0.2)
            assert calls == [True, False]  # and not retried for this lock
        async with gc.exclusive(purpose="gc r2", wait_timeout=5) as hold:
            await gc.relabel(hold, "sweep r2")
            state = await wait_for(gc.read_only_state, timeout=10,
                                   description="the read-only acknowledgement")
            assert state.acquired == hold.entry.acquired and calls[-1] is True
        await wait_for(lambda: calls_are([True, False, True, False]), timeout=10,
                       description="read-write after the lock is released")
        await wait_for(lambda: _none(gc), timeout=10, description="acknowledgement removed")
        assert len(windows) == 1 and windows[0] > 0
    finally:
        stop.set()
        await asyncio.wait_for(following, 10)
        await bus.close()


async def _none(fence: Fence) -> bool:
    return await fence.read_only_state() is None
