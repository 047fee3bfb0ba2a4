"""The publish pipeline against a real nats-server: order, duplicates, and retries that
neither lose nor double a message."""

from __future__ import annotations

import asyncio

import pytest

from clusterregistry.bus.connecting import connect
from clusterregistry.bus.publishing import Outgoing, Pipeline
from clusterregistry.bus.streams import ensure_stream
from clusterregistry_sandbox.natsservers import NatsServer
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration


def _messages(n: int, start: int = 0) -> list[Outgoing]:
    return [Outgoing(f"t.obj.{i}", f"payload-{i}".encode(), f"id-{i}")
            for i in range(start, start + n)]


async def _stream_payloads(server: NatsServer) -> list[bytes]:
    async with jetstream(server.url) as js:
        info = await js.stream_info("T")
        return [(await js.get_msg("T", seq)).data or b""
                for seq in range(info.state.first_seq, info.state.last_seq + 1)]


async def test_acks_in_order_and_duplicates_recognised(nats_server: NatsServer) -> None:
    bus = await connect([nats_server.url], name="t")
    try:
        await ensure_stream(bus, name="T", subjects=["t.>"])
        pipeline: Pipeline[int] = Pipeline(bus, window=50)
        tokens: list[int] = []
        duplicates = 0

        async def take() -> None:  # the relay's ack task, in small
            nonlocal duplicates
            while len(tokens) < 321:
                for acked in await pipeline.acked():
                    tokens.append(acked.token)
                    duplicates += acked.duplicate

        taking = asyncio.create_task(take())
        for i, message in enumerate(_messages(300)):
            await pipeline.send(message, i)  # blocks while 50 are unacknowledged
        await pipeline.send(None, 300)  # a token only: kept in order, nothing published
        for i, message in enumerate(_messages(20)):  # the same ids again
            await pipeline.send(message, 301 + i)
        await asyncio.wait_for(taking, 60)
        assert tokens == list(range(321))
        assert duplicates == 20
        assert await _stream_payloads(nats_server) == [m.payload for m in _messages(300)]
        await pipeline.close()
    finally:
        await bus.close()


async def test_no_stream_yet_means_retry_until_it_exists(nats_server: NatsServer) -> None:
    bus = await connect([nats_server.url], name="t")
    try:
        retries: list[Exception] = []
        pipeline: Pipeline[int] = Pipeline(bus, window=100, ack_timeout=1.0,
                                           backoff_initial=0.05, on_retry=retries.append)
        for i, message in enumerate(_messages(30)):
            await pipeline.send(message, i)
        acking = asyncio.create_task(pipeline.acked())
        async with asyncio.timeout(30):
            while not retries:  # no responders: the failure is reported, then resent
                await asyncio.wait({acking}, timeout=0.05)
        await ensure_stream(bus, name="T", subjects=["t.>"])
        got: list[int] = []
        async with asyncio.timeout(30):
            got.extend(a.token for a in await acking)
            while len(got) < 30:
                got.extend(a.token for a in await pipeline.acked())
        assert got == list(range(30))
        assert await _stream_payloads(nats_server) == [m.payload for m in _messages(30)]
        await pipeline.close()
    finally:
        await bus.close()


@pytest.mark.parametrize("direct", [True, False], ids=["hpub-runs", "nats-py-publish"])
async def test_send_many_keeps_the_window_order_and_tokens(nats_server: NatsServer,
                                                           direct: bool) -> None:
    bus = await connect([nats_server.url], name="t")
    try:
        await ensure_stream(bus, name="T", subjects=["t.>"])
        pipeline: Pipeline[int] = Pipeline(bus, window=50)
        pipeline._direct = direct  # False: the path used while disconnected, or without
        # the nats-py internals
        tokens: list[int] = []
        most_in_flight = 0

        async def take() -> None:
            nonlocal most_in_flight
            while len(tokens) < 301:
                most_in_flight = max(most_in_flight, len(pipeline))
                tokens.extend(acked.token for acked in await pipeline.acked())

        taking = asyncio.create_task(take())
        batch: list[tuple[Outgoing | None, int]] = [
            (message, i) for i, message in enumerate(_messages(300))]
        batch.insert(150, (None, -1))  # a token only, in the middle of a batch
        await pipeline.send_many(batch)  # 301 entries through a window of 50
        await asyncio.wait_for(taking, 60)
        assert tokens == [*range(150), -1, *range(150, 300)]
        assert most_in_flight <= 50
        assert await _stream_payloads(nats_server) == [m.payload for m in _messages(300)]
        await pipeline.close()
    finally:
        await bus.close()


async def test_line_breaks_in_headers_cannot_inject_protocol(nats_server: NatsServer) -> None:
    bus = await connect([nats_server.url], name="t")
    try:
        await ensure_stream(bus, name="T", subjects=["t.>"])
        pipeline: Pipeline[int] = Pipeline(bus, window=10)
        await pipeline.send_many([
            (Outgoing("t.a", b"one", "id-1\r\nPUB t.b 3\r\nbad", {"Trace": "x\ny"}), 1),
            (Outgoing("t.c", b"two", "id-2"), 2)])
        got: list[int] = []
        async with asyncio.timeout(30):
            while len(got) < 2:
                got.extend(acked.token for acked in await pipeline.acked())
        assert got == [1, 2]
        assert await _stream_payloads(nats_server) == [b"one", b"two"]
        async with jetstream(nats_server.url) as js:
            stored = await js.get_msg("T", 1)
        assert stored.headers == {"Nats-Msg-Id": "id-1  PUB t.b 3  bad", "Trace": "x y"}
        await pipeline.close()
    finally:
        await bus.close()
