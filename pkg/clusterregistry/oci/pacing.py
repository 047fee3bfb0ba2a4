"""Sharing the link: a token bucket that paces blob reads to a byte rate.

Edge clusters reach their artifact store over a WAN link that the network
functions need too, so a mirror worker may take at most
`mirror.maxBytesPerSecond` of it (all its copies together), and optionally
less from one source host (`mirror.registries[].maxBytesPerSecond`).

Reads are paced after they arrive: the copier reads a piece, then waits until
the bucket allows that many bytes. TCP flow control does the rest, since a
reader that waits stops draining its socket and the sender slows down. The
bucket is pure (`reserve` takes the time and returns the wait), so its
accuracy is tested with a fake clock; `Pacer` adds the sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

__all__ = ["Pacer", "TokenBucket"]


class TokenBucket:
    """`rate` bytes per second with a burst of `burst` bytes (default: a tenth of a second).

    A virtual-time bucket (GCRA): each reservation moves the time the link is free again
    by nbytes / rate; a reservation may run ahead of that time by the burst. Concurrent
    readers share the rate in the order they reserve.
    """

    def __init__(self, rate: int, burst: int | None = None, *, now: float = 0.0) -> None:
        if rate < 1:
            raise ValueError("rate: at least 1 byte per second")
        self.rate = rate
        self.burst = burst if burst is not None else max(rate // 10, 1)
        self._free_at = now

    def reserve(self, nbytes: int, now: float) -> float:
        """Take `nbytes` at time `now`: the seconds the caller must wait before going on."""
        self._free_at = max(self._free_at, now) + nbytes / self.rate
        return max(0.0, self._free_at - self.burst / self.rate - now)


class Pacer:
    """The worker-wide bucket and one per limited source host; `0` means unlimited.

    `on_wait(seconds)` is told of every wait (the mirror's throttled-seconds metric).
    """

    def __init__(self, rate: int = 0, per_host: Mapping[str, int] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 on_wait: Callable[[float], None] | None = None) -> None:
        self.clock = clock
        self.sleep = sleep
        self.on_wait = on_wait
        now = clock()
        self.rate = rate
        self._all = TokenBucket(rate, now=now) if rate > 0 else None
        self._hosts = {host: TokenBucket(limit, now=now)
                       for host, limit in (per_host or {}).items() if limit > 0}
        self.waited = 0.0

    @property
    def limited(self) -> bool:
        return self._all is not None or bool(self._hosts)

    def reserve(self, host: str, nbytes: int) -> float:
        """The wait for `nbytes` read from `host` now (both buckets reserve them)."""
        now = self.clock()
        wait = 0.0
        host_bucket = self._hosts.get(host)
        for bucket in (self._all, host_bucket):
            if bucket is not None:
                wait = max(wait, bucket.reserve(nbytes, now))
        return wait

    async def take(self, host: str, nbytes: int) -> None:
        wait = self.reserve(host, nbytes)
        if wait > 0:
            self.waited += wait
            if self.on_wait is not None:
                self.on_wait(wait)
            await self.sleep(wait)
