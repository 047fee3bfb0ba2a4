"""Streams against a real nats-server: work-queue retention, leaving a stream another
process owns as it is, and two processes creating one stream at once with different
settings (the one that loses uses the winner's, instead of failing its start)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from clusterregistry.bus.connecting import connect
from clusterregistry.bus.streams import ensure_stream, publish
from clusterregistry.errors import RetryableError
from clusterregistry.sandbox.natsservers import NatsServer

pytestmark = pytest.mark.integration


async def test_work_queue_retention_is_set_at_creation(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="streams-retention") as bus:
        queue = await ensure_stream(bus.js, name="Q", subjects=["q.>"], work_queue=True)
        log = await ensure_stream(bus.js, name="L", subjects=["l.>"])
        assert queue.retention == RetentionPolicy.WORK_QUEUE
        assert log.retention == RetentionPolicy.LIMITS
        assert (await bus.js.stream_info("Q")).config.retention == RetentionPolicy.WORK_QUEUE
        # a work queue: a message once acked is gone from the stream
        await bus.js.publish("q.job", b"1")
        sub = await bus.js.pull_subscribe("q.job", durable="w", stream="Q")
        (msg,) = await sub.fetch(1, timeout=5.0)
        await msg.ack_sync()
        assert (await bus.js.stream_info("Q")).state.messages == 0


async def test_update_false_leaves_an_existing_stream_as_it_is(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="streams-update") as bus:
        await ensure_stream(bus.js, name="S", subjects=["s.>"], duplicate_window=120.0)
        kept = await ensure_stream(bus.js, name="S", subjects=["s.>"], duplicate_window=600.0,
                                   update=False)
        assert kept.duplicate_window == 120.0
        assert (await bus.js.stream_info("S")).config.duplicate_window == 120.0
        # a missing one is still created, with these settings
        made = await ensure_stream(bus.js, name="N", subjects=["n.>"], duplicate_window=60.0,
                                   update=False)
        assert (await bus.js.stream_info("N")).config.duplicate_window == made.duplicate_window
        assert made.duplicate_window == 60.0
        # the owner's call still brings it to its settings
        await ensure_stream(bus.js, name="S", subjects=["s.>"], duplicate_window=600.0)
        assert (await bus.js.stream_info("S")).config.duplicate_window == 600.0


class _Rival:
    """The JetStream handle of a process that finds no stream, while another process creates
    it (with other settings) before this one's creation reaches the server."""

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
    async with await connect([nats_server.url], name="streams-race") as bus:
        winner = StreamConfig(name="R", subjects=["r.>"], duplicate_window=120.0,
                              retention=RetentionPolicy.WORK_QUEUE)
        js = cast(JetStreamContext, _Rival(bus.js, winner))
        # the real server refuses the second creation (other settings); the stream is used
        found = await ensure_stream(js, name="R", subjects=["r.>"], duplicate_window=600.0,
                                    work_queue=True, update=False)
        assert found.duplicate_window == 120.0
        # the stream's owner, losing the same race, brings it to its settings after all
        js = cast(JetStreamContext, _Rival(bus.js, StreamConfig(
            name="O", subjects=["o.>"], duplicate_window=120.0)))
        owned = await ensure_stream(js, name="O", subjects=["o.>"], duplicate_window=600.0)
        assert owned.duplicate_window == 600.0


async def test_a_refused_creation_is_retryable_and_says_why(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="streams-refused") as bus:
        await ensure_stream(bus.js, name="A", subjects=["t.>"])
        # overlapping subjects: refused, and no stream "B" exists to fall back on
        with pytest.raises(RetryableError, match="overlap") as caught:
            await ensure_stream(bus.js, name="B", subjects=["t.x"])
        assert caught.value.__cause__ is not None


async def test_publish_is_acknowledged_or_retryable(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="streams-publish") as bus:
        await ensure_stream(bus.js, name="P", subjects=["p.>"])
        first = await publish(bus.js, "p.one", b"1", headers={"Nats-Msg-Id": "m1"})
        second = await publish(bus.js, "p.two", b"2")
        assert second == first + 1
        # a duplicate (same Nats-Msg-Id within the window) is acked, not stored again
        assert await publish(bus.js, "p.one", b"1", headers={"Nats-Msg-Id": "m1"}) == first
        assert (await bus.js.stream_info("P")).state.messages == 2
        # no stream captures the subject: no one acknowledges it
        with pytest.raises(RetryableError, match="nowhere"):
            await publish(bus.js, "nowhere.x", b"?", timeout=2.0)
