"""Read-only windows: every front refuses writes while GC sweeps, without restarting anything.

distribution reads `maintenance.readonly` once at start, so switching it means a
restart that also drops reads. The front is the registry's one door, so it can
refuse writes itself: while GC's lock says `sweep ...` a write (PUT, POST,
PATCH, DELETE) gets 503 with a Retry-After, and reads keep flowing.

The handshake with GC lives in the fence bucket (`bus.fencing`): each front
renews `front.<id>` while it runs; when it sees a sweep lock it stops taking
writes, waits for the writes it already forwarded to finish, and then writes
`readonly.<id>` naming the lock (`acquired`). GC (readOnlyMode `front`) sweeps
only once every live front has acknowledged. The window ends when the lock is
released, or expires because GC died: nothing GC does can leave a front
read-only. If a front cannot read the lock for a whole TTL it takes writes
again, for the same reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

from clusterregistry import subjects
from clusterregistry.bus.fencing import Fence, wants_read_only
from clusterregistry.errors import RetryableError
from clusterregistry.front.metrics import FrontMetrics
from clusterregistry.schemas import FenceEntry

log = logging.getLogger(__name__)


class Window:
    """Whether this front refuses writes now; `run` keeps it in step with GC's lock."""

    def __init__(self, fence: Fence | None, *, front_id: str, metrics: FrontMetrics,
                 poll_interval: float = 0.1) -> None:
        self.fence = fence
        self.front_id = front_id
        self.metrics = metrics
        self.poll_interval = poll_interval
        self.read_only = False
        self.for_lock: float | None = None  # the `acquired` of the lock we are read-only for
        self.since = 0.0
        self.windows: list[float] = []  # each ended window's length, as this front saw it
        self.lock_readable = fence is None
        self._writes = 0
        self._drained = asyncio.Event()
        self._drained.set()

    @property
    def retry_after(self) -> int:
        """What a refused client is told to wait: a sweep renews its lock every ttl/3."""
        return max(1, round(self.fence.ttl / 3)) if self.fence else 5

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Count one forwarded write, so the acknowledgement waits for it to end."""
        self._writes += 1
        self._drained.clear()
        try:
            yield
        finally:
            self._writes -= 1
            if self._writes == 0:
                self._drained.set()

    async def run(self, stop: asyncio.Event) -> None:
        if self.fence is None:
            await stop.wait()
            return
        fence = self.fence
        loop = asyncio.get_running_loop()
        started = time.time()
        presence_key = subjects.fence_front(self.front_id)
        ack_key = subjects.fence_front_read_only(self.front_id)
        last_presence = last_ack = -1e9
        last_read = loop.time()
        try:
            while not stop.is_set():
                now = loop.time()
                if now - last_presence > fence.ttl / 3:
                    with contextlib.suppress(RetryableError):
                        await fence.put_entry(presence_key, FenceEntry(
                            holder=self.front_id, purpose="front", acquired=started,
                            renewed=time.time()))
                        last_presence = now
                try:
                    lock = await fence.lock_holder()
                    last_read = loop.time()
                    self.lock_readable = True
                except RetryableError as exc:
                    self.lock_readable = False
                    if self.read_only and loop.time() - last_read > fence.ttl:
                        log.error("cannot read the GC lock for %.1fs (%s): taking writes again",
                                  loop.time() - last_read, exc)
                        await self._leave(ack_key)
                    await self._pause(stop)
                    continue
                sweeping = wants_read_only(lock)
                if self.read_only and (not sweeping or lock is None
                                       or lock.acquired != self.for_lock):
                    await self._leave(ack_key)
                if sweeping and not self.read_only:
                    assert lock is not None
                    self._enter(lock)
                    last_ack = -1e9
                if self.read_only and self._drained.is_set() and (
                    loop.time() - last_ack > fence.ttl / 3
                ):
                    with contextlib.suppress(RetryableError):
                        await fence.put_entry(ack_key, FenceEntry(
                            holder=self.front_id, purpose="read-only",
                            acquired=self.for_lock or 0.0, renewed=time.time()))
                        last_ack = loop.time()
                await self._pause(stop)
        finally:
            if self.read_only:
                await self._leave(ack_key)
            with contextlib.suppress(RetryableError):
                await fence.put_entry(presence_key, None)

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.poll_interval)

    def _enter(self, lock: FenceEntry) -> None:
        log.info("GC %s is sweeping: refusing writes", lock.holder)
        self.read_only = True
        self.for_lock = lock.acquired
        self.since = time.monotonic()
        self.metrics.read_only.set(1)

    async def _leave(self, ack_key: str) -> None:
        window = time.monotonic() - self.since
        self.read_only = False
        self.for_lock = None
        self.windows.append(window)
        self.metrics.read_only.set(0)
        self.metrics.read_only_seconds.observe(window)
        log.info("GC's sweep is over: taking writes again after %.1fs", window)
        if self.fence is not None:
            with contextlib.suppress(RetryableError):
                await self.fence.put_entry(ack_key, None)
