"""Per-key exponential back-off with kube's flowcontrol.Backoff semantics.

The kubelet keeps one entry per (pod uid, image): after each failed pull
the delay doubles from the initial value up to the maximum (10 s to 300 s
on a real node), a pull is attempted again only once the delay since the
last failure has passed, and an entry untouched for twice the maximum
starts over at the initial value.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    delay: float
    last_update: float


class Backoff:
    def __init__(
        self, initial: float, maximum: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def next(self, key: str) -> float:
        """Record a failure now; returns the delay until the next attempt."""
        at = self.clock()
        entry = self._entries.get(key)
        if entry is None or at - entry.last_update > 2 * self.maximum:
            entry = self._entries[key] = _Entry(self.initial, at)
        else:
            entry.delay = min(entry.delay * 2, self.maximum)
            entry.last_update = at
        return entry.delay

    def delay(self, key: str) -> float:
        entry = self._entries.get(key)
        return entry.delay if entry is not None else 0.0

    def remaining(self, key: str) -> float:
        """Seconds until a new attempt is allowed (0: allowed now)."""
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(entry.last_update + entry.delay - self.clock(), 0.0)

    def in_backoff(self, key: str) -> bool:
        return self.remaining(key) > 0

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
