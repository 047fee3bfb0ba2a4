"""Following streams against a real nats-server: listing them, reading one in stream order
with an ordered ephemeral consumer (filtered, from the start or new only, recreated after
the last delivered message when its consumer is deleted), tapping a work queue without
taking its work, and every NATS failure reaching the caller as a project error, never as
a nats-py one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.following import (
    ConsumerRefusedError,
    Delivered,
    LiveTap,
    NoStreamError,
    OrderedReader,
    Start,
    StreamSubjects,
    list_streams,
)
from clusterregistry.errors import PermanentError, RetryableError
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import wait_for
from tests.world.nats import interest, jetstream

pytestmark = pytest.mark.integration

WAIT = 20.0
STREAM = "FOLLOW"
WORK = "FOLLOW_WORK"


@pytest.fixture
async def js(nats_server: NatsServer) -> AsyncIterator[JetStreamContext]:
    """The test's own client: it makes the streams and publishes, as the services would."""
    async with jetstream(nats_server.url) as client:
        await client.add_stream(StreamConfig(name=STREAM, subjects=["f.>"]))
        yield client


@pytest.fixture
async def bus(nats_server: NatsServer, js: JetStreamContext) -> AsyncIterator[Bus]:
    """The follower's connection (`clusterregistry trace`'s)."""
    connection = await connect([nats_server.url], name="test-following")
    try:
        yield connection
    finally:
        await connection.close()


class Collected:
    """What a follower delivered so far."""

    def __init__(self) -> None:
        self.messages: list[Delivered] = []

    async def __call__(self, message: Delivered) -> None:
        self.messages.append(message)

    @property
    def seqs(self) -> list[int | None]:
        return [m.seq for m in self.messages]

    async def reach(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.messages) >= count

        await wait_for(enough, timeout=WAIT, description=f"{count} messages; have {self.seqs}")


async def _consumers(js: JetStreamContext, stream: str = STREAM) -> list[str]:
    return [info.name for info in await js.consumers_info(stream)]


async def _stop(reader: OrderedReader, task: asyncio.Task[None]) -> None:
    reader.stopping = True
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await reader.discard()


async def test_list_streams_names_subjects_and_work_queues(
        bus: Bus, js: JetStreamContext) -> None:
    await js.add_stream(StreamConfig(name=WORK, subjects=["w.request"],
                                     retention=RetentionPolicy.WORK_QUEUE))
    found = sorted(await list_streams(bus))
    assert found == [StreamSubjects(STREAM, ["f.>"], False),
                     StreamSubjects(WORK, ["w.request"], True)]


async def test_reads_in_order_filtered_with_headers_and_leaves_no_consumer(
        bus: Bus, js: JetStreamContext) -> None:
    await js.publish("f.a.1", b"one", headers={"X-Note": "first"})
    await js.publish("f.b.1", b"two")  # not followed: stream sequence 2 is skipped
    await js.publish("f.c.1", b"three")
    reader = OrderedReader(bus, STREAM, ("f.a.>", "f.c.>"), start=Start(from_start=True))
    await reader.create()
    assert reader.consumer is not None
    assert reader.consumer.startswith(subjects.TRACE_CONSUMER_PREFIX)
    assert await _consumers(js) == [reader.consumer]
    collected = Collected()
    task = asyncio.create_task(reader.run(collected))
    try:
        await collected.reach(2)
        first, third = collected.messages
        assert (first.stream, first.subject, first.data, first.seq) == (
            STREAM, "f.a.1", b"one", 1)
        assert first.headers == {"X-Note": "first"}
        assert (third.subject, third.data, third.seq, third.headers) == (
            "f.c.1", b"three", 3, {})
        assert first.time.tzinfo is not None
        assert abs((datetime.now(UTC) - first.time).total_seconds()) < 60
    finally:
        await _stop(reader, task)
    assert await _consumers(js) == []


async def test_new_only_skips_what_the_stream_held(
        bus: Bus, js: JetStreamContext) -> None:
    await js.publish("f.old", b"old")
    reader = OrderedReader(bus, STREAM, ("f.>",), start=Start())
    await reader.create()
    collected = Collected()
    task = asyncio.create_task(reader.run(collected))
    try:
        await js.publish("f.new", b"new")
        await collected.reach(1)
        assert [(m.subject, m.seq) for m in collected.messages] == [("f.new", 2)]
    finally:
        await _stop(reader, task)


async def test_a_deleted_consumer_is_recreated_after_the_last_delivered_message(
    bus: Bus, js: JetStreamContext,
) -> None:
    reader = OrderedReader(bus, STREAM, ("f.>",), start=Start())
    await reader.create()
    collected = Collected()
    task = asyncio.create_task(reader.run(collected))
    try:
        for number in range(3):
            await js.publish(f"f.{number}", b"x")
        await collected.reach(3)
        [gone] = await _consumers(js)
        await js.delete_consumer(STREAM, gone)
        for number in range(3, 6):
            await js.publish(f"f.{number}", b"x")
        await collected.reach(6)
        assert collected.seqs == [1, 2, 3, 4, 5, 6]  # nothing lost, nothing twice
        [new] = await _consumers(js)
        assert new != gone
    finally:
        await _stop(reader, task)


async def test_a_refused_consumer_is_a_permanent_project_error(
        bus: Bus, js: JetStreamContext) -> None:
    await js.add_stream(StreamConfig(name=WORK, subjects=["w.request"],
                                     retention=RetentionPolicy.WORK_QUEUE))
    reader = OrderedReader(bus, WORK, ("w.request",), start=Start(from_start=True))
    # a work queue wants acknowledged consumers: the server refuses an ack-none one
    with pytest.raises(ConsumerRefusedError) as refused:
        await reader.create()
    assert isinstance(refused.value, PermanentError)
    assert not isinstance(refused.value, nats.errors.Error)
    assert isinstance(refused.value.__cause__, nats.errors.Error)
    assert str(refused.value)
    assert await _consumers(js, WORK) == []


async def test_the_live_tap_sees_publishes_without_taking_work(
        bus: Bus, js: JetStreamContext, nats_server: NatsServer) -> None:
    await js.add_stream(StreamConfig(name=WORK, subjects=["w.request"],
                                     retention=RetentionPolicy.WORK_QUEUE))
    tap = LiveTap(bus, WORK, ("w.request",))
    collected = Collected()
    await tap.start(collected)
    try:
        before = datetime.now(UTC)
        await js.publish("w.request", b"work", headers={"X-Note": "n"})
        try:
            await collected.reach(1)
        except TimeoutError as exc:
            raise AssertionError(
                f"{exc}; the server: {await interest(nats_server, 'w.request')}") from exc
        [seen] = collected.messages
        assert (seen.stream, seen.subject, seen.data, seen.seq) == (
            WORK, "w.request", b"work", None)
        assert seen.headers == {"X-Note": "n"}
        assert seen.time >= before
    finally:
        await tap.stop()
    info = await js.stream_info(WORK)
    assert (info.state.messages, info.state.consumer_count) == (1, 0)
    # stopped: nothing more arrives
    await js.publish("w.request", b"more")
    await bus.flush()  # what the server delivered to it has arrived
    assert len(collected.messages) == 1


async def test_nats_failures_are_project_errors(bus: Bus) -> None:
    reader = OrderedReader(bus, STREAM, ("f.>",), start=Start(from_start=True))
    await reader.create()
    task = asyncio.create_task(reader.run(Collected()))
    await bus.close()
    # a connection closed for good ends the reader with a RetryableError, not nats-py's
    async with asyncio.timeout(WAIT):
        with pytest.raises(RetryableError) as ended:
            await task
    assert not isinstance(ended.value, nats.errors.Error)
    assert isinstance(ended.value.__cause__, nats.errors.Error)
    await reader.discard()  # never raises, even without NATS

    with pytest.raises(NoStreamError, match="cannot list JetStream streams"):
        await list_streams(bus)
    with pytest.raises(RetryableError) as creating:
        await OrderedReader(bus, STREAM, ("f.>",), start=Start()).create()
    assert type(creating.value) is RetryableError
    tap = LiveTap(bus, WORK, ("w.request",))
    with pytest.raises(RetryableError):
        await tap.start(Collected())
    await tap.stop()
