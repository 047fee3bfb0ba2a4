"""Publishing to JetStream in order, pipelined, retried until stored, never doubled.

`Pipeline` keeps up to `window` messages in flight and hands their
acknowledgements back strictly in send order. When an ack fails or does not
come (NATS down, a stream leader election), every message still in flight
is republished, in order, until all are acknowledged: what JetStream had
already stored comes back as a duplicate ack thanks to Nats-Msg-Id, so a
retry neither loses nor doubles a message. A connection delivers in order
and loses a suffix when it breaks, so the stream keeps the send order too.

It talks JetStream's publish protocol directly (a core publish with a reply
subject; the ack arrives on one wildcard subscription) rather than through
nats-py's publish_async, which creates a Future, a random token and a parsed
PubAck per message and measured about 1.5 times slower for the same
guarantees.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import msgspec
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clusterregistry.bus.connecting import Bus
from clusterregistry.subjects import MSG_ID_HEADER

log = logging.getLogger(__name__)

T = TypeVar("T")

_PENDING, _STORED, _DUPLICATE, _FAILED = 0, 1, 2, 3


class _PubAck(msgspec.Struct):
    duplicate: bool = False


_ack_decoder = msgspec.json.Decoder(_PubAck)


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
    seq: int
    sent: float
    state: int = _PENDING
    error: str = ""


@dataclass(frozen=True, slots=True)
class Acked(Generic[T]):
    token: T
    duplicate: bool
    sent: float  # loop time of the (last) send


class PublishError(Exception):
    """JetStream refused a message, or it could not be sent."""


class Pipeline(Generic[T]):
    def __init__(
        self,
        bus: Bus,
        *,
        window: int = 2000,
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
        self._by_seq: dict[int, _InFlight[T]] = {}
        self._seq = 0
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._progress = asyncio.Event()  # an ack arrived, or a message was queued
        self._lock = asyncio.Lock()  # sending and resending never interleave

    def __len__(self) -> int:
        return len(self._inflight)

    async def _subscribe(self) -> None:
        nc = self.bus.nc
        self._prefix = f"{nc._inbox_prefix.decode()}.{nc._nuid.next().decode()}."
        self._subscription = await nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def _on_ack(self, msg: Msg) -> None:
        try:
            seq = int(msg.subject[len(self._prefix):])
        except ValueError:
            return
        entry = self._by_seq.pop(seq, None)
        if entry is None:
            return  # the ack of an earlier send of a message since resent: superseded
        data = msg.data or b""
        if msg.headers and msg.headers.get("Status") == "503":
            entry.state, entry.error = _FAILED, "no responders: the stream is not available"
        elif b'"error"' in data:
            entry.state, entry.error = _FAILED, data.decode(errors="replace")[:300]
        elif b'"duplicate"' in data and _ack_decoder.decode(data).duplicate:
            # the server writes `"duplicate": true`, with a space: parse rather than match
            entry.state = _DUPLICATE
        else:
            entry.state = _STORED
        self._progress.set()

    async def _publish(self, entry: _InFlight[T]) -> None:
        message = entry.message
        if message is None:
            entry.state = _STORED
            return
        self._seq += 1
        entry.seq = self._seq
        entry.state = _PENDING
        self._by_seq[entry.seq] = entry
        headers = {MSG_ID_HEADER: message.msg_id, **message.headers}
        try:
            await self.bus.nc.publish(message.subject, message.payload,
                                      reply=f"{self._prefix}{entry.seq}", headers=headers)
        except Exception as exc:  # not even sent: the ack side finds out and resends
            self._by_seq.pop(entry.seq, None)
            entry.state, entry.error = _FAILED, f"{type(exc).__name__}: {exc}"

    async def send(self, message: Outgoing | None, token: T) -> None:
        """Queue `message` (None: only a token, e.g. a resume point, kept in order)."""
        if self._subscription is None:
            await self._subscribe()
        while len(self._inflight) >= self.window:
            self._room.clear()
            await self._room.wait()
        async with self._lock:
            entry = _InFlight(message, token, 0, asyncio.get_running_loop().time())
            await self._publish(entry)
            self._inflight.append(entry)
            self._progress.set()

    async def acked(self) -> list[Acked[T]]:
        """The acks that arrived, oldest first: at least one, in send order, and never one
        whose predecessor is still unacknowledged. A failed or missing ack resends
        everything in flight (with back-off) and waits again."""
        delay = self.backoff_initial
        loop = asyncio.get_running_loop()
        while True:
            deadline: float | None = None
            while not self._inflight or self._inflight[0].state == _PENDING:
                self._progress.clear()
                if not self._inflight:
                    deadline = None
                    await self._progress.wait()
                    continue
                if deadline is None:
                    deadline = loop.time() + self.ack_timeout
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), remaining)
            out: list[Acked[T]] = []
            while self._inflight and self._inflight[0].state in (_STORED, _DUPLICATE):
                entry = self._inflight.popleft()
                out.append(Acked(entry.token, entry.state == _DUPLICATE, entry.sent))
            if len(self._inflight) < self.window:
                self._room.set()
            if out:
                return out  # a failure behind them is found on the next call
            head = self._inflight[0]
            failure = PublishError(head.error or f"no acknowledgement within "
                                                 f"{self.ack_timeout:g}s")
            if self.on_retry is not None:
                self.on_retry(failure)
            log.warning("publish failed (%s); resending %d in-flight messages in %.1fs",
                        failure, len(self._inflight), delay)
            await self._resend(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _resend(self, delay: float) -> None:
        async with self._lock:
            for entry in self._inflight:
                self._by_seq.pop(entry.seq, None)  # late acks of the old sends are ignored
            await asyncio.sleep(delay)  # back-off before republishing
            now = asyncio.get_running_loop().time()
            for entry in self._inflight:
                entry.sent = now
                await self._publish(entry)

    def cancel(self) -> None:
        self._inflight.clear()
        self._by_seq.clear()

    async def close(self) -> None:
        self.cancel()
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception as exc:  # a closed connection has no subscription left
                log.debug("unsubscribe: %s", exc)
            self._subscription = None

