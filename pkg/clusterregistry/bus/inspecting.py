"""Read-only looks at JetStream: a stream's size, its durable consumers' lag, a last message.

`clusterregistry status` answers "how far behind is each consumer, how long is the
mirror's queue, when did GC last run" from what the server already keeps (stream
and consumer info, the last message on a subject), as `nats stream info` and `nats
consumer info` would, without creating a consumer or changing anything: a status
command must never take work off a work queue or leave state behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.translating import translating
from clusterregistry.errors import NotFoundError

__all__ = ["ConsumerLag", "LastMessage", "StreamSize", "consumers", "last_message", "stream_size"]


@dataclass(frozen=True)
class StreamSize:
    name: str
    messages: int
    bytes: int


@dataclass(frozen=True)
class ConsumerLag:
    """One durable consumer: messages not yet delivered, delivered but not yet acked, and
    redeliveries (a consumer that keeps failing a message)."""

    stream: str
    name: str
    num_pending: int
    num_ack_pending: int
    num_redelivered: int
    filter_subject: str = ""


@dataclass(frozen=True)
class LastMessage:
    subject: str
    data: bytes
    seq: int


async def stream_size(bus: Bus, stream: str) -> StreamSize | None:
    """The stream's message and byte counts; None when the stream does not exist."""
    try:
        with translating(f"stream info {stream}"):
            info = await bus._js.stream_info(stream)
    except NotFoundError:
        return None
    state = info.state
    return StreamSize(stream, int(state.messages or 0), int(state.bytes or 0))


async def consumers(bus: Bus, stream: str) -> list[ConsumerLag]:
    """Every consumer of `stream` (durable or not) with its lag; [] when there is no stream."""
    try:
        with translating(f"consumer list {stream}"):
            infos = await bus._js.consumers_info(stream)
    except NotFoundError:
        return []
    out = []
    for info in infos:
        name = info.name or (info.config.durable_name if info.config else "") or ""
        filter_subject = (info.config.filter_subject if info.config else "") or ""
        out.append(ConsumerLag(stream, name, int(info.num_pending or 0),
                               int(info.num_ack_pending or 0),
                               int(info.num_redelivered or 0), filter_subject))
    return sorted(out, key=lambda c: c.name)


async def last_message(bus: Bus, stream: str, subject: str) -> LastMessage | None:
    """The stream's last message on `subject` (a wildcard subject too); None when none."""
    try:
        with translating(f"last message on {subject} in {stream}"):
            msg = await bus._js.get_last_msg(stream, subject)
    except NotFoundError:
        return None
    return LastMessage(msg.subject or subject, msg.data or b"", int(msg.seq or 0))
