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
PubAck per message. A batch of messages (`send_many`) becomes one run of
HPUB commands written to the connection at once while it is connected;
nats-py's `publish`, which validates and encodes each message and wakes its
flusher each time, costs more than the rest of the relay's publishing, and
is used only while the connection is down (it buffers within its limit and
raises beyond it), or if nats-py no longer has the internals used here
(`DIRECT_INTERNALS`: private, hence nats-py's upper bound in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.translating import translating
from clusterregistry.errors import ClusterRegistryError
from clusterregistry.subjects import MSG_ID_HEADER

log = logging.getLogger(__name__)

T = TypeVar("T")

_PENDING, _STORED, _DUPLICATE, _FAILED = 0, 1, 2, 3

# what nats-py's publish checks, checked here for the direct path: no whitespace in a
# subject (a CR LF would inject a protocol line), a header name is an HTTP token, and a
# header value has no line breaks
_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")
_HEADER_KEY = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_MSG_ID_LINE = b"NATS/1.0\r\n" + MSG_ID_HEADER.encode() + b": "


class _PubAck(msgspec.Struct):
    duplicate: bool = False


_ack_decoder = msgspec.json.Decoder(_PubAck)


class Outgoing(msgspec.Struct, frozen=True):
    """A message to publish: Nats-Msg-Id is `msg_id`, other headers in `headers`."""

    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class Acked(Generic[T]):
    """One message (or token) in the window; handed back by `acked()` once stored."""

    __slots__ = ("error", "message", "sent", "seq", "state", "token")

    def __init__(self, message: Outgoing | None, token: T, sent: float) -> None:
        self.message = message
        self.token = token
        self.sent = sent  # loop time of the (last) send
        self.seq = 0
        self.state = _PENDING
        self.error = ""

    @property
    def duplicate(self) -> bool:
        """JetStream already had this Nats-Msg-Id: acknowledged, not stored again."""
        return self.state == _DUPLICATE


class PublishError(Exception):
    """JetStream refused a message, or it could not be sent."""


_header_names: dict[str, bytes] = {}  # header name -> its validated, encoded form


def _header_name(key: str) -> bytes:
    name = _header_names.get(key)
    if name is None:
        stripped = key.strip()
        if not _HEADER_KEY.fullmatch(stripped):
            raise PublishError(f"bad header name {key!r}")
        name = stripped.encode()
        if len(_header_names) < 256:  # the few names code uses, not whatever callers invent
            _header_names[key] = name
    return name


def _header_value(value: str) -> bytes:
    if "\r" in value or "\n" in value:
        value = value.translate(_NEWLINES)
    return value.strip().encode()


def _header_block(message: Outgoing) -> bytes:
    """NATS/1.0 headers: Nats-Msg-Id first, then the message's other headers."""
    parts = [_MSG_ID_LINE, _header_value(message.msg_id), b"\r\n"]
    for key, value in message.headers.items():
        if key != MSG_ID_HEADER:
            parts += (_header_name(key), b": ", _header_value(value), b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


# nats-py's private members the direct path uses: present from 2.0 to at least 2.16, which
# is why pyproject.toml bounds nats-py above; tests/integration/bus/test_nats_internals.py
# checks each one's shape and effect on the installed version, so an upgrade that changes
# them fails there rather than in production (where _direct would fall back to publish)
DIRECT_INTERNALS = ("_send_command", "_flush_pending", "_flush_queue")


def _direct(nc: Client) -> bool:
    """Whether nats-py still has the internals the direct path uses."""
    return all(hasattr(nc, name) for name in (*DIRECT_INTERNALS, "stats"))


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
        self._inflight: collections.deque[Acked[T]] = collections.deque()
        self._by_seq: dict[int, Acked[T]] = {}
        self._seq = 0
        self._prefix = ""
        self._reply = b""
        self._subscription: Subscription | None = None
        self._direct = _direct(bus._nc)
        self._room = asyncio.Event()
        self._room.set()
        self._progress = asyncio.Event()  # an ack arrived, or a message was queued
        self._lock = asyncio.Lock()  # sending and resending never interleave

    def __len__(self) -> int:
        return len(self._inflight)

    async def _subscribe(self) -> None:
        nc = self.bus._nc
        self._prefix = nc.new_inbox() + "."
        self._reply = self._prefix.encode()
        with translating("subscribing to publish acknowledgements"):
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

    async def _publish(self, entries: Sequence[Acked[T]]) -> None:
        """Send these entries' messages in order, each with a fresh reply subject."""
        nc = self.bus._nc
        direct = self._direct and nc.is_connected and not nc.is_draining_pubs
        max_payload = nc.max_payload
        commands: list[bytes] = []
        size = 0
        by_seq = self._by_seq
        for index, entry in enumerate(entries):
            message = entry.message
            if message is None:  # a token only: in order, nothing to publish
                entry.state = _STORED
                continue
            self._seq += 1
            seq = entry.seq = self._seq
            entry.state = _PENDING
            by_seq[seq] = entry
            try:
                if not direct:
                    # disconnected: nats-py buffers within its limit and raises beyond it
                    with translating(f"publishing to {message.subject}"):
                        await nc.publish(message.subject, message.payload,
                                         reply=f"{self._prefix}{seq}",
                                         headers={MSG_ID_HEADER: message.msg_id,
                                                  **message.headers})
                    continue
                header = _header_block(message)
                payload = message.payload
                total = len(header) + len(payload)
                if total > max_payload:  # the server would close the connection
                    raise PublishError(f"{total} bytes exceed the max payload {max_payload}")
                subject = message.subject
                if not subject or _SUBJECT_INVALID.search(subject):
                    raise PublishError(f"bad subject {subject!r}")
                commands.append(b"HPUB %b %b%d %d %d\r\n%b%b\r\n" % (
                    subject.encode(), self._reply, seq, len(header), total, header, payload))
                size += len(payload)
            except (PublishError, ClusterRegistryError) as exc:
                # not sent: the ack side finds out and resends
                for failed in entries[index:]:
                    if failed.message is not None:
                        by_seq.pop(failed.seq, None)
                        failed.state = _FAILED
                        failed.error = f"{type(exc).__name__}: {exc}"
                break
        if commands:
            try:
                with translating("publishing a batch"):
                    await self._write(nc, commands, size)
            except ClusterRegistryError as exc:  # e.g. the connection closed: resent later
                for entry in entries:
                    if entry.message is not None and by_seq.pop(entry.seq, None) is entry:
                        entry.state, entry.error = _FAILED, f"{type(exc).__name__}: {exc}"

    @staticmethod
    async def _write(nc: Any, commands: list[bytes], size: int) -> None:
        # one append to nats-py's pending buffer and one wake-up of its flusher for the
        # whole batch; nats-py's reconnect logic resends that buffer like any publish
        stats = nc.stats
        stats["out_msgs"] += len(commands)
        stats["out_bytes"] += size
        await nc._send_command(b"".join(commands))
        if nc._flush_queue is not None and nc._flush_queue.empty():  # as publish() does
            await nc._flush_pending()

    async def send(self, message: Outgoing | None, token: T) -> None:
        """Queue `message` (None: only a token, e.g. a resume point, kept in order)."""
        await self.send_many(((message, token),))

    async def send_many(self, batch: Sequence[tuple[Outgoing | None, T]]) -> None:
        """Queue these, in order; blocks while the window is full, so at most `window`
        are ever in flight."""
        if self._subscription is None:
            await self._subscribe()
        loop = asyncio.get_running_loop()
        start = 0
        while start < len(batch):
            while len(self._inflight) >= self.window:
                self._room.clear()
                await self._room.wait()
            async with self._lock:
                room = self.window - len(self._inflight)
                if room <= 0:
                    continue
                now = loop.time()
                entries = [Acked(message, token, now)
                           for message, token in batch[start:start + room]]
                start += len(entries)
                self._inflight.extend(entries)
                await self._publish(entries)
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
            inflight = self._inflight
            while inflight and inflight[0].state in (_STORED, _DUPLICATE):
                out.append(inflight.popleft())
            if len(inflight) < self.window:
                self._room.set()
            if out:
                return out  # a failure behind them is found on the next call
            head = inflight[0]
            failure = PublishError(head.error or f"no acknowledgement within "
                                                 f"{self.ack_timeout:g}s")
            if self.on_retry is not None:
                self.on_retry(failure)
            log.warning("publish failed (%s); resending %d in-flight messages in %.1fs",
                        failure, len(inflight), delay)
            await self._resend(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _resend(self, delay: float) -> None:
        async with self._lock:
            for entry in self._inflight:
                self._by_seq.pop(entry.seq, None)  # late acks of the old sends are ignored
            await asyncio.sleep(delay)  # back-off before republishing
            now = asyncio.get_running_loop().time()
            entries = list(self._inflight)
            for entry in entries:
                entry.sent = now
            await self._publish(entries)

    def cancel(self) -> None:
        self._inflight.clear()
        self._by_seq.clear()

    async def close(self) -> None:
        self.cancel()
        if self._subscription is not None:
            try:
                with translating("unsubscribing from publish acknowledgements"):
                    await self._subscription.unsubscribe()
            except ClusterRegistryError as exc:  # a closed connection has no subscription left
                log.debug("%s", exc)
            self._subscription = None
