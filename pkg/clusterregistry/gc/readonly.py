"""The registry's read-only mode follows GC's lock, so a dead GC cannot leave it read-only.

distribution reads `storage.maintenance.readonly` only when it starts, so switching
means restarting the registry. Whoever supervises the registry process (the
sandbox here) runs `follow`: while GC's lock says `sweep ...` the registry runs
read-only, and as soon as the lock is gone (released, or expired because GC died)
it runs read-write again. GC never switches the registry itself: a GC killed in the
middle would leave the switch thrown. After switching, the follower acknowledges
with the `readonly` key (its `acquired` names the lock it was switched for), and
GC sweeps only after seeing that acknowledgement.

If the follower cannot read the lock for a whole TTL it switches back to
read-write: the lock it obeyed may be long gone, and a registry that refuses
writes for ever is the failure this design exists to prevent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from clusterregistry.bus.fencing import SWEEP_PURPOSE as SWEEP_PURPOSE  # noqa: PLC0414
from clusterregistry.bus.fencing import Fence, wants_read_only
from clusterregistry.errors import RetryableError
from clusterregistry.runtime.lifecycle import sleep_unless_stopped
from clusterregistry.schemas import FenceEntry

log = logging.getLogger(__name__)

Switch = Callable[[bool], Awaitable[None]]


async def follow(
    fence: Fence,
    switch: Switch,
    stop: asyncio.Event,
    *,
    name: str = "registry",
    poll_interval: float = 0.1,
    on_window: Callable[[float], None] | None = None,
) -> None:
    """Keep the registry's mode in step with GC's lock until `stop`; read-write on the way out.

    `switch(True)` must return once the registry serves read-only, `switch(False)` once it
    accepts writes again. `on_window` gets each read-only window's length in seconds.
    """
    loop = asyncio.get_running_loop()
    read_only_for: float | None = None  # the lock's `acquired` we are read-only for
    since = 0.0
    last_read = loop.time()
    last_ack = 0.0
    failed_for: float | None = None  # the lock a switch to read-only failed for
    try:
        while not stop.is_set():
            try:
                lock = await fence.lock_holder()
                last_read = loop.time()
            except RetryableError as exc:
                if read_only_for is not None and loop.time() - last_read > fence.ttl:
                    log.error("cannot read the GC lock for %.1fs (%s): back to read-write",
                              loop.time() - last_read, exc)
                    lock = None
                else:
                    await sleep_unless_stopped(stop, poll_interval)
                    continue
            if wants_read_only(lock) and read_only_for is None:
                assert lock is not None
                if lock.acquired == failed_for:
                    await sleep_unless_stopped(stop, poll_interval)
                    continue  # not again for this lock: GC gives up waiting, unswept
                log.info("GC %s is sweeping: switching %s read-only", lock.holder, name)
                try:
                    await switch(True)
                except Exception:
                    # never acknowledged, so GC does not sweep; and the registry must not
                    # stay down or read-only because the switch broke half-way
                    log.exception("switching %s read-only failed; back to read-write", name)
                    failed_for = lock.acquired
                    with contextlib.suppress(Exception):
                        await switch(False)
                    continue
                read_only_for, since = lock.acquired, loop.time()
                last_ack = 0.0
            elif not wants_read_only(lock) and read_only_for is not None:
                log.info("GC lock released or expired: switching %s read-write", name)
                await switch(False)
                window = loop.time() - since
                read_only_for = None
                if on_window is not None:
                    on_window(window)
                with contextlib.suppress(RetryableError):
                    await fence.set_read_only_state(None)
            if read_only_for is not None and loop.time() - last_ack > fence.ttl / 3:
                with contextlib.suppress(RetryableError):
                    await fence.set_read_only_state(FenceEntry(
                        holder=name, purpose="read-only", acquired=read_only_for,
                        renewed=time.time()))
                    last_ack = loop.time()
            await sleep_unless_stopped(stop, poll_interval)
    finally:
        if read_only_for is not None:
            await switch(False)
            with contextlib.suppress(RetryableError):
                await fence.set_read_only_state(None)

