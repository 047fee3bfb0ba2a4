"""The registry fence against a real nats-server: GC and mirror writes never overlap, and a
holder killed with SIGKILL leaves nothing fenced beyond the TTL."""

from __future__ import annotations

import asyncio
import random
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.fencing import Fence
from clusterregistry.errors import FenceHeldError, FenceLostError
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import Process, wait_for
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration

TTL = 1.5


async def _fence(server: NatsServer, holder: str, *, ttl: float = TTL) -> tuple[Bus, Fence]:
    bus = await connect([server.url], name=holder)
    fence = Fence(bus, ttl_seconds=ttl, holder=holder, poll_interval=0.05)
    await fence.ensure()
    return bus, fence


async def test_gc_waits_for_a_write_in_flight_and_writers_back_off_while_it_holds(
    nats_server: NatsServer,
) -> None:
    bus, fence = await _fence(nats_server, "t")
    try:
        writer_done = asyncio.Event()
        in_writer = asyncio.Event()
        order: list[str] = []

        async def write() -> None:
            async with fence.writing("copy a"):
                in_writer.set()
                # held for longer than a TTL: the renewals keep the entry alive
                await asyncio.sleep(TTL * 1.5)
                order.append("write finished")
            writer_done.set()

        writing = asyncio.create_task(write())
        await in_writer.wait()
        assert [w.purpose for w in (await fence.writers()).values()] == ["copy a"]
        async with fence.exclusive(purpose="sweep", wait_timeout=10):
            order.append("gc in")
            assert writer_done.is_set()
            assert await fence.writers() == {}
            holder = await fence.lock_holder()
            assert holder is not None and holder.holder == "t" and holder.purpose == "sweep"
            with pytest.raises(FenceHeldError, match="fenced for garbage collection by t"):
                async with fence.writing("copy b"):
                    order.append("write b ran")  # pragma: no cover - must not happen
            # the refused writer left no entry behind
            assert await fence.writers() == {}
            # a second GC (another replica) cannot take the lock
            with pytest.raises(FenceHeldError, match="held by t"):
                async with fence.exclusive(purpose="second", wait_timeout=1):
                    order.append("second gc ran")  # pragma: no cover
        await writing
        assert order == ["write finished", "gc in"]
        assert await fence.lock_holder() is None
        async with fence.writing("copy c"):
            order.append("write c ran")
        assert order[-1] == "write c ran"
    finally:
        await bus.close()


async def test_gc_gives_up_after_wait_timeout_and_releases_the_lock(
    nats_server: NatsServer,
) -> None:
    bus, fence = await _fence(nats_server, "t")
    try:
        release = asyncio.Event()
        inside = asyncio.Event()

        async def long_write() -> None:
            async with fence.writing("slow copy"):
                inside.set()
                await release.wait()

        writing = asyncio.create_task(long_write())
        await inside.wait()
        with pytest.raises(FenceHeldError, match="1 registry writes still in flight"):
            async with fence.exclusive(purpose="sweep", wait_timeout=0.5):
                pytest.fail("GC got in while a write was in flight")
        assert await fence.lock_holder() is None  # released on the way out
        release.set()
        await writing
        async with fence.exclusive(purpose="sweep", wait_timeout=5):
            assert await fence.writers() == {}
    finally:
        await bus.close()


async def test_a_lost_entry_cancels_the_work_inside(nats_server: NatsServer) -> None:
    bus, fence = await _fence(nats_server, "t")
    try:
        async with jetstream(nats_server.url) as js:  # removes entries behind their holders
            kv = await js.key_value(subjects.GC_BUCKET)
            reached = asyncio.Event()
            with pytest.raises(FenceLostError, match="lost"):
                async with fence.exclusive(purpose="sweep", wait_timeout=1):
                    # someone else removes our lock (as an expiry would): the next renewal fails
                    await kv.purge(subjects.FENCE_LOCK)
                    reached.set()
                    await asyncio.sleep(30)
                    pytest.fail("the body was not cancelled")
            assert reached.is_set()
            with pytest.raises(FenceLostError):
                async with fence.writing("copy"):
                    for key in (await fence.writers()):
                        await kv.purge(key)
                    await asyncio.sleep(30)
            # a caller's own cancellation stays a cancellation, and still releases
            task = asyncio.create_task(_hold_exclusive(fence))
            await wait_for(fence.lock_holder, timeout=10, description="lock taken")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await fence.lock_holder() is None
    finally:
        await bus.close()


async def test_a_swallowed_cancellation_is_delivered_again(nats_server: NatsServer) -> None:
    """Python 3.11's wait_for can swallow a cancellation (nats-py requests use it): the fence
    cancels again until the work inside a lost entry has stopped."""
    bus, fence = await _fence(nats_server, "t")
    try:
        async with jetstream(nats_server.url) as js:  # removes entries behind their holders
            kv = await js.key_value(subjects.GC_BUCKET)
            swallowed = 0
            with pytest.raises(FenceLostError):
                async with fence.writing("copy"):
                    for key in await fence.writers():
                        await kv.purge(key)
                    try:
                        await asyncio.sleep(30)
                    except asyncio.CancelledError:
                        swallowed += 1  # as wait_for does when the reply arrives at that moment
                    await asyncio.sleep(30)
                    pytest.fail("the body was not cancelled again")
            assert swallowed == 1
            assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    finally:
        await bus.close()


async def _hold_exclusive(fence: Fence) -> None:
    async with fence.exclusive(purpose="hold", wait_timeout=1):
        await asyncio.sleep(60)


async def test_mutual_exclusion_under_concurrency(nats_server: NatsServer) -> None:
    """Writers and GCs on separate connections, racing: the two sides are never inside at once."""
    buses = []
    fences = []
    for i in range(4):
        bus, fence = await _fence(nats_server, f"p{i}")
        buses.append(bus)
        fences.append(fence)
    inside = {"gc": 0, "write": 0}
    entered = {"gc": 0, "write": 0, "refused": 0}
    violations: list[str] = []
    rng = random.Random(7)

    async def enter(side: str, fence: Fence) -> None:
        # at least 12 attempts each, and on until this side got in and some attempt was
        # refused: which side wins a race is up to the scheduler (two GCs can starve the
        # writers for 12 rounds on a loaded machine; once the GCs stop, writers get in);
        # the wait_for below bounds it
        attempts = 0
        while attempts < 12 or not (entered[side] > 0 and entered["refused"] > 0):
            attempts += 1
            try:
                if side == "gc":
                    context = fence.exclusive(purpose="sweep", wait_timeout=0.3)
                else:
                    context = fence.writing("copy")
                async with context:
                    inside[side] += 1
                    entered[side] += 1
                    other = "write" if side == "gc" else "gc"
                    if inside[other] or (side == "gc" and inside["gc"] > 1):
                        violations.append(f"{side} inside with {inside}")
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    if inside[other]:
                        violations.append(f"{side} inside with {inside}")
                    inside[side] -= 1
            except FenceHeldError:
                entered["refused"] += 1
            await asyncio.sleep(rng.uniform(0, 0.02))

    try:
        await asyncio.wait_for(asyncio.gather(
            enter("gc", fences[0]), enter("gc", fences[1]),
            enter("write", fences[2]), enter("write", fences[3]),
            enter("write", fences[2]), enter("write", fences[3]),
        ), 120)
        assert violations == []
        # both sides actually got in, and the fence actually refused some attempts
        assert entered["gc"] > 0 and entered["write"] > 0 and entered["refused"] > 0
        assert await fences[0].lock_holder() is None and await fences[0].writers() == {}
    finally:
        for bus in buses:
            await bus.close()


_HOLDER = textwrap.dedent("""
    import asyncio, sys
    from clusterregistry.bus.connecting import connect
    from clusterregistry.bus.fencing import Fence

    async def main(url, side, ttl):
        bus = await connect([url], name="victim")
        fence = Fence(bus, ttl_seconds=float(ttl), holder="victim")
        await fence.ensure()
        context = (fence.exclusive(purpose="sweep", wait_timeout=5) if side == "gc"
                   else fence.writing("copy"))
        async with context:
            print("held", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main(*sys.argv[1:]))
""")


@pytest.mark.parametrize("side", ["gc", "write"])
async def test_a_holder_killed_with_sigkill_expires_within_the_ttl(
    nats_server: NatsServer, tmp_path: Path, side: str,
) -> None:
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    victim = Process([sys.executable, str(script), nats_server.url, side, str(TTL)],
                     name="fence-holder", log_path=tmp_path / "holder.log")
    bus, fence = await _fence(nats_server, "survivor")
    try:
        await victim.start()

        async def held() -> bool:
            if side == "gc":
                return await fence.lock_holder() is not None
            return bool(await fence.writers())

        await wait_for(held, timeout=30, description="the victim holds the fence")
        # the victim renews: still held after more than a TTL
        await asyncio.sleep(TTL * 1.5)
        assert await held(), "the holder's renewals did not keep its entry"
        await victim.kill()
        killed = time.monotonic()
        await wait_for(lambda: _not(held), timeout=TTL * 4, interval=0.05,
                       description="the dead holder's entry to expire")
        expired_after = time.monotonic() - killed
        # a renewal happened at most ttl/3 before the kill: gone within the TTL (+ slack for
        # the server's expiry timer and a loaded machine)
        assert expired_after < TTL + 1.5, expired_after
        # and the other side gets in
        if side == "gc":
            async with fence.writing("copy after gc died"):
                pass
        else:
            async with fence.exclusive(purpose="sweep", wait_timeout=TTL * 2):
                pass
    finally:
        await victim.stop(grace=1)
        await bus.close()


async def _not(predicate: object) -> bool:
    assert callable(predicate)
    return not await predicate()
