"""Streams against a real nats-server: work-queue retention, leaving a stream another
process owns as it is, and two processes creating one stream at once with different
settings (the one that loses uses the winner's, instead of failing its start)."""

from __future__ import annotations

from typing import Any, cast

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.streams import ensure_stream, publish
from clusterregistry.errors import PermanentError, RetryableError
from clusterregistry_sandbox.natsservers import NatsServer
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration


async def test_work_queue_retention_is_set_at_creation(nats_server: NatsServer) -> None:
    async with (await connect([nats_server.url], name="streams-retention") as bus,
                jetstream(nats_server.url) as js):
        queue = await ensure_stream(bus, name="Q", subjects=["q.>"], work_queue=True)
        log = await ensure_stream(bus, name="L", subjects=["l.>"])
        assert queue.retention == RetentionPolicy.WORK_QUEUE
        assert log.retention == RetentionPolicy.LIMITS
        assert (await js.stream_info("Q")).config.retention == RetentionPolicy.WORK_QUEUE
        # a work queue: a message once acked is gone from the stream
        await publish(bus, "q.job", b"1")
        sub = await js.pull_subscribe("q.job", durable="w", stream="Q")
        (msg,) = await sub.fetch(1, timeout=5.0)
        await msg.ack_sync()
        assert (await js.stream_info("Q")).state.messages == 0


async def test_update_false_leaves_an_existing_stream_as_it_is(nats_server: NatsServer) -> None:
    async with (await connect([nats_server.url], name="streams-update") as bus,
                jetstream(nats_server.url) as js):
        await ensure_stream(bus, name="S", subjects=["s.>"], duplicate_window=120.0)
        kept = await ensure_stream(bus, name="S", subjects=["s.>"], duplicate_window=600.0,
                                   update=False)
        assert kept.duplicate_window == 120.0
        assert (await js.stream_info("S")).config.duplicate_window == 120.0
        # a missing one is still created, with these settings
        made = await ensure_stream(bus, name="N", subjects=["n.>"], duplicate_window=60.0,
                                   update=False)
        assert (await js.stream_info("N")).config.duplicate_window == made.duplicate_window
        assert made.duplicate_window == 60.0
        # the owner's call still brings it to its settings
        await ensure_stream(bus, name="S", subjects=["s.>"], duplicate_window=600.0)
        assert (await js.stream_info("S")).config.duplicate_window == 600.0


class _Rival:
    """The JetStream context of a process that finds no stream, while another process
    creates it (with other settings) before this one's creation reaches the server; a Bus
    built on it (Bus's constructor takes any nats-py client and context)."""

    def __init__(self, js: JetStreamContext, rival: StreamConfig) -> None:
        self._js = js
        self._rival: StreamConfig | None = rival

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)

    async def stream_info(self, name: str) -> Any:
        if self._rival is not None:
            await self._js.add_stream(self._rival)
            self._rival = None
            raise NotFoundError()
        return await self._js.stream_info(name)


async def test_losing_a_creation_race_uses_the_winners_stream(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        winner = StreamConfig(name="R", subjects=["r.>"], duplicate_window=120.0,
                              retention=RetentionPolicy.WORK_QUEUE)
        bus = Bus(nc, cast(JetStreamContext, _Rival(nc.jetstream(), winner)))
        # the real server refuses the second creation (other settings); the stream is used
        found = await ensure_stream(bus, name="R", subjects=["r.>"], duplicate_window=600.0,
                                    work_queue=True, update=False)
        assert found.duplicate_window == 120.0
        # the stream's owner, losing the same race, brings it to its settings after all
        bus = Bus(nc, cast(JetStreamContext, _Rival(nc.jetstream(), StreamConfig(
            name="O", subjects=["o.>"], duplicate_window=120.0))))
        owned = await ensure_stream(bus, name="O", subjects=["o.>"], duplicate_window=600.0)
        assert owned.duplicate_window == 600.0
    finally:
        await nc.close()


async def test_a_refused_creation_is_retryable_and_says_why(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="streams-refused") as bus:
        await ensure_stream(bus, name="A", subjects=["t.>"])
        # overlapping subjects: refused, and no stream "B" exists to fall back on
        with pytest.raises(RetryableError, match="overlap") as caught:
            await ensure_stream(bus, name="B", subjects=["t.x"])
        assert caught.value.__cause__ is not None


async def test_publish_is_acknowledged_or_retryable(nats_server: NatsServer) -> None:
    async with (await connect([nats_server.url], name="streams-publish") as bus,
                jetstream(nats_server.url) as js):
        await ensure_stream(bus, name="P", subjects=["p.>"])
        first = await publish(bus, "p.one", b"1", headers={"Nats-Msg-Id": "m1"})
        second = await publish(bus, "p.two", b"2")
        assert second == first + 1
        # a duplicate (same Nats-Msg-Id within the window) is acked, not stored again
        assert await publish(bus, "p.one", b"1", headers={"Nats-Msg-Id": "m1"}) == first
        assert (await js.stream_info("P")).state.messages == 2
        # no stream captures the subject: no one acknowledges it
        with pytest.raises(RetryableError, match="nowhere"):
            await publish(bus, "nowhere.x", b"?", timeout=2.0)
        # a subject no server accepts is the request's fault: asking again cannot help
        with pytest.raises(PermanentError, match="invalid subject"):
            await publish(bus, "p.with space", b"?")
