"""Following JetStream streams without disturbing them: in stream order, nothing lost or twice.

`clusterregistry trace` reads streams that the services consume; it must not
take work from them, nor leave anything behind when it ends. This adapter
does the NATS part and hands out plain `Delivered` messages, raising only
the project's errors.

A stream is read by an ordered, ephemeral pull consumer (`OrderedReader`):
ack none, memory storage, one replica, and an inactive threshold so that the
server removes it when a trace crashes and nobody pulls any more. JetStream
numbers what a consumer delivers 1, 2, 3 ... (the consumer sequence) whatever
stream sequences it skips (other subjects): the reader checks that consumer
sequences are contiguous and, on a gap (a message lost on a disconnect) or
when the consumer vanished (a server restart, a long disconnect), recreates
it from the next stream sequence, so nothing is lost or shown twice.

A work-queue stream (`CLUSTERREGISTRY_MIRROR`) must not get a second
consumer (it would take work away from the mirror, and the server refuses
one without acks), so its subjects are followed with a plain core-NATS
subscription (`LiveTap`): live only, no sequences, the time of arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    SequenceInfo,
)

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.translating import translating
from clusterregistry.errors import (
    ClusterRegistryError,
    NotFoundError,
    PermanentError,
    RetryableError,
)

__all__ = [
    "ConsumerRefusedError",
    "Delivered",
    "LiveTap",
    "NoStreamError",
    "OrderedReader",
    "Start",
    "StreamSubjects",
    "list_streams",
]

# a pull request waits this long for messages; after one that brought none, the consumer
# is looked up (a server restart or a long disconnect may have taken it)
FETCH_WINDOW = 2.0
_FETCH_BATCH = 256
# the server removes a consumer nobody pulled from for this long (a crashed trace)
_INACTIVE_THRESHOLD = 60.0
# retries of consumer creation while NATS is away
_RETRY_FIRST, _RETRY_MAX = 0.2, 5.0
# best-effort clean-up of our consumers at exit
_CLEANUP_TIMEOUT = 2.0


class NoStreamError(ClusterRegistryError):
    """No stream holds any subject the trace asked for (or the streams cannot be
    listed): nothing to follow."""


class ConsumerRefusedError(PermanentError):
    """The server refused a consumer on a stream (a JetStream API refusal, translated as a
    PermanentError): that stream cannot be followed, asking again the same way will not
    help."""


@dataclass(frozen=True, kw_only=True)
class Delivered:
    """One message as a follower saw it.

    `seq` is the stream sequence and `time` when the stream stored it; a message seen
    on a plain subscription (`LiveTap`) has no sequence, and `time` is when it arrived.
    """

    stream: str
    subject: str
    data: bytes
    headers: Mapping[str, str]
    seq: int | None
    time: datetime


Deliver = Callable[[Delivered], Awaitable[None]]


class StreamSubjects(NamedTuple):
    """A stream's name, its own subjects, and whether it is a work queue."""

    name: str
    subjects: list[str]
    work_queue: bool


async def list_streams(bus: Bus) -> list[StreamSubjects]:
    """Every JetStream stream (all pages of the listing). Raises NoStreamError when the
    server cannot be asked."""
    found: list[StreamSubjects] = []
    try:
        while True:
            with translating("cannot list JetStream streams"):
                page = await bus._js.streams_info(offset=len(found))
            if not page:
                return found
            for info in page:
                cfg = info.config
                found.append(StreamSubjects(cfg.name or "", list(cfg.subjects or []),
                                            cfg.retention == RetentionPolicy.WORK_QUEUE))
    except ClusterRegistryError as exc:
        raise NoStreamError(str(exc)) from exc.__cause__


@dataclass(frozen=True)
class Start:
    """Where reading starts: every message the stream holds, new ones only, or a time."""

    from_start: bool = False
    since: datetime | None = None


class OrderedReader:
    """An ordered, ephemeral pull consumer on one stream, filtered to `filter_subjects`.

    Consumer sequences must run 1, 2, 3 ...; a gap (a message lost on a disconnect) or
    a consumer the server no longer has makes a new consumer that starts right after
    the last stream sequence delivered, whatever the original start was.
    """

    def __init__(
        self, bus: Bus, stream: str, filter_subjects: Sequence[str], *, start: Start
    ) -> None:
        self.bus = bus
        self.stream = stream
        self.filter_subjects = tuple(filter_subjects)
        self.start = start
        self.consumer: str | None = None
        # checked every round: a cancellation can be lost inside nats-py's fetch (Python
        # 3.11's wait_for returns a result that arrived with the cancel), this cannot
        self.stopping = False
        self._sub: JetStreamContext.PullSubscription | None = None
        self._last_stream_seq: int | None = None
        self._last_consumer_seq = 0

    def _config(self, name: str) -> ConsumerConfig:
        cfg = ConsumerConfig(
            name=name,
            description="clusterregistry trace (ephemeral, ordered)",
            ack_policy=AckPolicy.NONE,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=_INACTIVE_THRESHOLD,
        )
        # filter_subjects (several) needs nats-server 2.10; one subject works everywhere
        if len(self.filter_subjects) == 1:
            cfg.filter_subject = self.filter_subjects[0]
        else:
            cfg.filter_subjects = list(self.filter_subjects)
        if self._last_stream_seq is not None:
            cfg.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            cfg.opt_start_seq = self._last_stream_seq + 1
        elif self.start.from_start:
            cfg.deliver_policy = DeliverPolicy.ALL
        elif self.start.since is not None:
            cfg.deliver_policy = DeliverPolicy.BY_START_TIME
            cfg.opt_start_time = self.start.since
        else:
            cfg.deliver_policy = DeliverPolicy.NEW
        return cfg

    async def create(self) -> None:
        """Create the consumer and bind to it.

        Raises ConsumerRefusedError when the server refuses it (this stream cannot be
        followed), RetryableError when NATS could not be asked or cannot answer now (a
        503 while the stream has no leader).
        """
        try:
            await self._create()
        except PermanentError as exc:
            raise ConsumerRefusedError(str(exc)) from exc.__cause__

    async def _create(self) -> None:
        await self.discard()
        name = subjects.TRACE_CONSUMER_PREFIX + secrets.token_hex(6)
        with translating(f"consumer on {self.stream}"):
            info = await self.bus._js.add_consumer(self.stream, self._config(name))
        self.consumer = info.name
        # what the consumer counts as already delivered: for `new`, the stream's last
        # sequence at creation; a recreation therefore never skips what came meanwhile
        delivered = info.delivered or SequenceInfo(consumer_seq=0, stream_seq=0)
        self._last_stream_seq = delivered.stream_seq
        self._last_consumer_seq = delivered.consumer_seq
        with translating(f"consumer on {self.stream}"):
            self._sub = await self.bus._js.pull_subscribe_bind(consumer=info.name,
                                                           stream=self.stream)

    async def discard(self) -> None:
        """Drop the subscription and (best effort) the consumer; never raises."""
        sub, consumer = self._sub, self.consumer
        self._sub, self.consumer = None, None
        what = f"discarding consumer {consumer} on {self.stream}"
        if sub is not None:
            with contextlib.suppress(ClusterRegistryError), translating(what):
                await sub.unsubscribe()
        if consumer is not None:
            # the server removes it after its inactive threshold if this fails
            with contextlib.suppress(ClusterRegistryError), translating(what):
                async with asyncio.timeout(_CLEANUP_TIMEOUT):
                    await self.bus._js.delete_consumer(self.stream, consumer)

    async def _recreate(self) -> None:
        delay = _RETRY_FIRST
        while not self.stopping:
            try:
                await self._create()
                return
            except ClusterRegistryError:
                # NATS away or the stream gone for now: the connection reconnects forever
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)

    async def _alive(self) -> bool:
        if self.consumer is None:
            return False
        try:
            with translating(f"consumer {self.consumer} on {self.stream}"):
                await self.bus._js.consumer_info(self.stream, self.consumer)
        except NotFoundError:
            return False
        except RetryableError:
            return True  # cannot tell (disconnected): keep the consumer, ask again later
        return True

    def _in_order(self, messages: list[Msg]) -> tuple[list[Delivered], bool]:
        """The in-order messages of a batch, and whether a gap was found."""
        delivered: list[Delivered] = []
        for msg in messages:
            metadata = msg.metadata
            if metadata.sequence.consumer != self._last_consumer_seq + 1:
                return delivered, True
            self._last_consumer_seq = metadata.sequence.consumer
            self._last_stream_seq = metadata.sequence.stream
            delivered.append(Delivered(
                stream=self.stream,
                subject=msg.subject,
                data=msg.data,
                headers=dict(msg.headers or {}),
                seq=metadata.sequence.stream,
                time=metadata.timestamp,
            ))
        return delivered, False

    async def run(self, deliver: Deliver) -> None:
        """Pass every message, in stream order, to `deliver` until `stopping` is set or
        the task is cancelled; recreates the consumer (after `create()`) whenever needed.

        Raises RetryableError when the connection is closed for good.
        """
        loop = asyncio.get_running_loop()
        backoff = _RETRY_FIRST
        task = asyncio.current_task()
        while not self.stopping:
            if task is not None and task.cancelling():
                # Ctrl-C cancelled us, but nats-py's fetch (asyncio.wait_for on Python
                # 3.11) can swallow a cancellation that races its timeout: honour it
                raise asyncio.CancelledError
            if self._sub is None:
                await self._recreate()
                if self._sub is None:
                    continue  # stopping
            began = loop.time()
            try:
                with translating(f"following {self.stream}"):
                    messages = await self._sub.fetch(_FETCH_BATCH, timeout=FETCH_WINDOW)
            except ClusterRegistryError as exc:  # a TimedOutError when the stream is quiet
                if self.bus.closed:
                    raise RetryableError(str(exc)) from exc.__cause__
                messages = []
            if not messages:
                # a quiet stream, or a server restart or a long disconnect that took the
                # consumer with it: only the server can say which
                if not await self._alive():
                    await self.discard()
                if loop.time() - began < FETCH_WINDOW / 2:
                    await asyncio.sleep(backoff)  # failed at once: do not spin
                    backoff = min(backoff * 2, _RETRY_MAX)
                continue
            backoff = _RETRY_FIRST
            delivered, gap = self._in_order(messages)
            for message in delivered:
                await deliver(message)
            if gap:
                await self.discard()


class LiveTap:
    """A plain subscription on a work-queue stream's subjects: live only, no sequences."""

    def __init__(self, bus: Bus, stream: str, filter_subjects: Sequence[str]) -> None:
        self.bus = bus
        self.stream = stream
        self.filter_subjects = tuple(filter_subjects)
        self._subs: list[Subscription] = []

    async def start(self, deliver: Deliver) -> None:
        """Subscribe (and flush, so what is published from now on is seen); raises
        RetryableError when NATS could not be asked, PermanentError when it refused."""

        async def received(msg: Msg) -> None:
            await deliver(Delivered(
                stream=self.stream,
                subject=msg.subject,
                data=msg.data,
                headers=dict(msg.headers or {}),
                seq=None,
                time=datetime.now(UTC),
            ))

        try:
            for subject in self.filter_subjects:
                with translating(f"subscribing to {subject}"):
                    self._subs.append(await self.bus._nc.subscribe(subject, cb=received))
            await self.bus.flush()
        except ClusterRegistryError:
            await self.stop()  # no half-open tap: the caller never got one to stop
            raise

    async def stop(self) -> None:
        """Unsubscribe; never raises."""
        for sub in self._subs:
            with contextlib.suppress(ClusterRegistryError), translating("unsubscribing"):
                await sub.unsubscribe()
        self._subs.clear()
