"""Work queues and the controller loop every kubesim controller runs.

This is client-go's workqueue in miniature: keys ('namespace/name') are
de-duplicated while waiting, a key being processed is never handed to a
second worker (a re-add while processing marks it dirty and requeues it
when the worker is done), failures are retried with a per-key exponential
back-off, and `add_after` gives controllers timers with real meaning
(minReadySeconds, a CronJob's next schedule, a Job's back-off) instead of
polling loops.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from kubesim.statuses import ApiError

if TYPE_CHECKING:
    from kubesim.controllers.caching import Context

log = logging.getLogger(__name__)


class QueueShutDownError(Exception):
    """Raised by WorkQueue.get once the queue has been shut down."""


class WorkQueue:
    """A de-duplicating queue of keys with delayed adds and per-key failure back-off."""

    def __init__(self, *, retry_base: float = 0.005, retry_max: float = 30.0) -> None:
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[str, int] = {}
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._shut_down = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # requeued by done()
        self._queue.append(key)
        self._wake()

    def add_after(self, key: str, delay: float) -> None:
        """Add the key after delay seconds; only the earliest pending timer per key is kept."""
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> None:
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        self.add_after(key, min(self._retry_base * (2**failures), self._retry_max))

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> str:
        while not self._queue:
            if self._shut_down:
                raise QueueShutDownError
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and self._queue:
                    self._wake()  # pass the wake-up on to another worker
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut_down:
            self._queue.append(key)
            self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def shut_down(self) -> None:
        self._shut_down = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


class Controller(abc.ABC):
    """A level-based controller: events enqueue keys, workers reconcile them.

    Subclasses implement `initial_keys` (what to reconcile after the first
    list), `on_event` (which keys a change affects: it must only enqueue)
    and `reconcile` (read the current state from the cache, converge).
    """

    name: ClassVar[str] = "controller"
    workers: int = 1

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.cache = ctx.cache
        self.queue = WorkQueue()
        self._tasks: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    def initial_keys(self) -> Iterable[str]: ...

    @abc.abstractmethod
    def on_event(
        self, event: str, kind: str, *, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """kind is a caching constant (PODS, NODES, ...); old/new are cache snapshots."""

    @abc.abstractmethod
    async def reconcile(self, key: str) -> None: ...

    def start(self) -> None:
        for key in self.initial_keys():
            self.queue.add(key)
        for index in range(self.workers):
            self._tasks.append(
                asyncio.create_task(self._work(), name=f"kubesim-{self.name}-{index}")
            )

    async def stop(self) -> None:
        self.queue.shut_down()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.close()

    async def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release what the controller holds beyond its workers (sessions, timers)."""

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDownError:
                return
            try:
                await self.reconcile(key)
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                if err.code == 404:
                    # What we acted on is gone; its deletion event enqueues what matters.
                    self.queue.forget(key)
                elif err.code == 409:
                    # Conflict: our cache is already newer than the object we wrote
                    # (listeners run synchronously), so retry soon.
                    self.queue.add_rate_limited(key)
                else:
                    log.warning("%s: reconciling %s: %s %s", self.name, key, err.code, err)
                    self.queue.add_rate_limited(key)
            except Exception:
                log.exception("%s: reconciling %s failed", self.name, key)
                self.queue.add_rate_limited(key)
            else:
                self.queue.forget(key)
            finally:
                self.queue.done(key)
