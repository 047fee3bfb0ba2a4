"""Request and reply against a real nats-server: one member of a queue group answers each
request, a slow answer does not hold up the next request, nobody listening is a clear
RetryableError, and stopping leaves the answers still running to the caller."""

from __future__ import annotations

import asyncio

import pytest

from clusterregistry.bus import replying
from clusterregistry.bus.connecting import connect
from clusterregistry.bus.replying import Responder
from clusterregistry.errors import RetryableError
from clusterregistry_sandbox.natsservers import NatsServer

pytestmark = pytest.mark.integration


async def test_each_request_is_answered_by_one_member_of_the_group(
        nats_server: NatsServer) -> None:
    answered: dict[str, int] = {"a": 0, "b": 0}

    def handler(name: str) -> replying.Handler:
        async def handle(data: bytes) -> bytes:
            answered[name] += 1
            return name.encode() + b":" + data
        return handle

    async with (await connect([nats_server.url], name="rr-a") as a,
                await connect([nats_server.url], name="rr-b") as b,
                await connect([nats_server.url], name="rr-client") as client):
        responders = [Responder(a, "q.ask", queue="g", handle=handler("a")),
                      Responder(b, "q.ask", queue="g", handle=handler("b"))]
        for responder in responders:
            await responder.start()
        await a.flush()
        await b.flush()
        replies = [await replying.request(client, "q.ask", str(i).encode(), timeout=5)
                   for i in range(20)]
        assert sorted(r.split(b":")[1] for r in replies) == sorted(
            str(i).encode() for i in range(20))
        assert answered["a"] + answered["b"] == 20  # each request answered exactly once
        for responder in responders:
            await responder.stop()


async def test_a_slow_answer_does_not_hold_up_the_next_request(nats_server: NatsServer) -> None:
    release = asyncio.Event()

    async def handle(data: bytes) -> bytes:
        if data == b"slow":
            await release.wait()
        return data

    async with (await connect([nats_server.url], name="rr-s") as server,
                await connect([nats_server.url], name="rr-c") as client):
        responder = Responder(server, "q.slow", queue="g", handle=handle)
        await responder.start()
        await server.flush()
        slow = asyncio.create_task(replying.request(client, "q.slow", b"slow", timeout=30))
        assert await replying.request(client, "q.slow", b"fast", timeout=5) == b"fast"
        assert not slow.done() and len(responder.running) == 1
        release.set()
        assert await slow == b"slow"
        await responder.stop()


async def test_nobody_listening_is_a_retryable_error(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="rr-none") as client:
        with pytest.raises(RetryableError, match=r"no answer on q\.nobody"):
            await replying.request(client, "q.nobody", b"?", timeout=2)


async def test_stop_unsubscribes_and_leaves_the_running_answers_to_the_caller(
        nats_server: NatsServer) -> None:
    started = asyncio.Event()

    async def handle(data: bytes) -> bytes:
        started.set()
        await asyncio.sleep(60)
        return data

    async with (await connect([nats_server.url], name="rr-stop") as server,
                await connect([nats_server.url], name="rr-stop-c") as client):
        responder = Responder(server, "q.stop", queue="g", handle=handle)
        await responder.start()
        await server.flush()
        waiting = asyncio.create_task(replying.request(client, "q.stop", b"x", timeout=30))
        await asyncio.wait_for(started.wait(), 10)
        await responder.stop()
        (running,) = responder.running
        assert not running.done()
        running.cancel()
        with pytest.raises(RetryableError):  # no answer ever comes, nobody listens now
            await replying.request(client, "q.stop", b"y", timeout=2)
        waiting.cancel()
        await asyncio.gather(running, waiting, return_exceptions=True)
