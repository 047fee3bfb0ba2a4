"""Publishing to JetStream in order, pipelined, retried until stored, never doubled.

`Pipeline` keeps up to `window` messages in flight (publish_async: no round
trip per message) and hands acknowledgements back strictly in send order.
When an ack fails or does not come (NATS down, a stream leader election),
every message still in flight is republished, in order, until all are
acknowledged: what JetStream had already stored comes back as a duplicate
ack thanks to Nats-Msg-Id, so a retry neither loses nor doubles a message.
A connection delivers in order and loses a suffix when it breaks, so the
stream keeps the send order too.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from clusterregistry.bus.connecting import Bus
from clusterregistry.subjects import MSG_ID_HEADER

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _InFlight(Generic[T]):
    message: Outgoing | None
    token: T
    future: asyncio.Future[Any]
    sent: float


@dataclass(frozen=True, slots=True)
class Acked(Generic[T]):
    token: T
    duplicate: bool
    sent: float  # loop time of the (last) send


class Pipeline(Generic[T]):
    def __init__(
        self,
        bus: Bus,
        *,
        window: int = 2000,  # below publish_async_max_pending (connecting.py: 4000)
        ack_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> None:
        self.bus = bus
        self.window = window
        self.ack_timeout = ack_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_retry = on_retry
        self._inflight: collections.deque[_InFlight[T]] = collections.deque()
        self._room = asyncio.Event()
        self._room.set()
        self._sent = asyncio.Event()
        self._lock = asyncio.Lock()  # sending and resending never interleave

    def __len__(self) -> int:
        return len(self._inflight)

    async def _publish(self, message: Outgoing) -> asyncio.Future[Any]:
        headers = {MSG_ID_HEADER: message.msg_id, **message.headers}
        try:
            # no wait_stall: the window keeps us under publish_async's pending limit, and
            # a wait_stall costs a timer and an extra loop turn on every message
            future = await self.bus.js.publish_async(message.subject, message.payload,
                                                     headers=headers)
        except Exception as exc:  # not even sent: the ack side finds out and resends
            future = asyncio.get_running_loop().create_future()
            future.set_exception(exc)
        # a failed ack we cancel before awaiting must not be reported as never retrieved
        future.add_done_callback(_retrieve)
        return future

    async def send(self, message: Outgoing | None, token: T) -> None:
        """Queue `message` (None: only a token, e.g. a resume point, kept in order)."""
        while len(self._inflight) >= self.window:
            self._room.clear()
            await self._room.wait()
        async with self._lock:
            future = _done() if message is None else await self._publish(message)
            self._inflight.append(_InFlight(message, token, future,
                                            asyncio.get_running_loop().time()))
            self._sent.set()

    async def acked(self) -> list[Acked[T]]:
        """The acks that arrived, oldest first: at least one, in send order, and never one
        whose predecessor is still unacknowledged. A failed or missing ack resends
        everything in flight (with back-off) and waits again."""
        delay = self.backoff_initial
        while True:
            while not self._inflight:
                self._sent.clear()
                await self._sent.wait()
            head = self._inflight[0]
            if not head.future.done():
                # asyncio.wait neither cancels the future nor wraps it in a task per call
                await asyncio.wait((head.future,), timeout=self.ack_timeout)
            out: list[Acked[T]] = []
            failure: BaseException | None = None
            if not head.future.done():
                failure = TimeoutError(f"no acknowledgement within {self.ack_timeout:g}s")
            while self._inflight and failure is None:
                entry = self._inflight[0]
                if not entry.future.done():
                    break
                if entry.future.cancelled():
                    failure = ConnectionError("publish cancelled")
                    break
                exc = entry.future.exception()
                if exc is not None:
                    failure = exc
                    break
                self._inflight.popleft()
                ack = entry.future.result()
                out.append(Acked(entry.token, bool(getattr(ack, "duplicate", False)),
                                 entry.sent))
            if len(self._inflight) < self.window:
                self._room.set()
            if out:
                return out  # a failure behind them is found on the next call
            assert failure is not None
            if self.on_retry is not None:
                self.on_retry(failure if isinstance(failure, Exception) else Exception(failure))
            log.warning("publish failed (%s); resending %d in-flight messages in %.1fs",
                        str(failure) or type(failure).__name__, len(self._inflight), delay)
            await self._resend(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _resend(self, delay: float) -> None:
        async with self._lock:
            # acks that will never come (the server restarted) would hold publish_async's
            # pending slots for ever: cancel them before sending again
            for entry in self._inflight:
                entry.future.cancel()
            await asyncio.sleep(delay)  # back-off before republishing
            now = asyncio.get_running_loop().time()
            for entry in self._inflight:
                entry.future = _done() if entry.message is None else await self._publish(
                    entry.message)
                entry.sent = now

    def cancel(self) -> None:
        for entry in self._inflight:
            entry.future.cancel()
        self._inflight.clear()


def _done() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
