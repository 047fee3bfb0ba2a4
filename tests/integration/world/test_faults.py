"""The TCP fault proxy, each option proven against a tiny echo server, a sink, or an HTTP
server, all on 127.0.0.1 with random ports. Timings are only ever lower bounds (a delay or a
cap the proxy adds), which a loaded machine cannot break."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from clusterregistry_sandbox.supervising import wait_for
from tests.world.faults import FaultProxy, Faults, StartProxy, TokenBucket

pytestmark = pytest.mark.integration

TIMEOUT = 30.0
KiB = 1024


@dataclass
class Server:
    """A test server: its port, and what each connection received (bytes, in order)."""

    port: int
    received: list[int] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Coroutine[Any, Any, None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                server: Server) -> None:
    total = 0
    while data := await reader.read(64 * KiB):
        total += len(data)
        writer.write(data)
        await writer.drain()
    server.received.append(total)
    writer.close()


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                server: Server) -> None:
    total = 0
    try:
        while data := await reader.read(64 * KiB):
            total += len(data)
    except ConnectionError:
        pass
    server.received.append(total)
    server.closed.set()
    writer.close()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> Server:
        box: list[Server] = []

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.create_task(handler(reader, writer, box[0]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        listener = await asyncio.start_server(accept, "127.0.0.1", 0)
        servers.append(listener)
        box.append(Server(listener.sockets[0].getsockname()[1]))
        return box[0]

    try:
        yield start
    finally:
        for listener in servers:
            listener.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for listener in servers:
            await listener.wait_closed()


async def _exchange(port: int, payload: bytes, *, half_close: bool = True) -> bytes:
    """Send `payload` (then EOF), read until EOF; what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(TIMEOUT):
            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                if half_close:
                    writer.write_eof()

            sending = asyncio.create_task(send())
            received = bytearray()
            try:
                while data := await reader.read(64 * KiB):
                    received += data
            except ConnectionError:
                pass
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            return bytes(received)
    finally:
        writer.transport.abort()


async def _until(condition: Callable[[], bool], description: str) -> None:
    async def check() -> bool:
        return condition()

    await wait_for(check, timeout=TIMEOUT, interval=0.01, description=description)


def _payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_without_faults_every_byte_goes_through_and_is_counted(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    echo = await serve(_echo)
    proxy = await fault_proxy(echo.port)
    payload = _payload(3 * 1024 * KiB)
    assert await _exchange(proxy.port, payload) == payload
    assert (proxy.bytes_up, proxy.bytes_down, proxy.connections, proxy.cuts) == (
        len(payload), len(payload), 1, 0)
    rate = proxy.down_rate()
    assert rate is not None and rate > 0
    proxy.reset_counts()
    assert (proxy.bytes_up, proxy.bytes_down, proxy.down_rate()) == (0, 0, None)
    assert proxy.host == f"127.0.0.1:{proxy.port}" and proxy.port != echo.port


async def test_a_cut_downstream_delivers_exactly_n_bytes_then_closes(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    echo = await serve(_echo)
    proxy = await fault_proxy(echo.port, Faults(cut_after=100_000))
    payload = _payload(1024 * KiB)
    for _ in range(3):  # every connection, not only the first
        assert await _exchange(proxy.port, payload) == payload[:100_000]
    assert proxy.cuts == 3 and proxy.bytes_down == 300_000
    assert proxy.bytes_up >= 300_000  # the request went on until the cut came back


async def test_a_cut_upstream_lets_the_server_receive_exactly_n_bytes(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    sink = await serve(_sink)
    proxy = await fault_proxy(sink.port, Faults(cut_after=70_001, direction="up"))
    await _exchange(proxy.port, _payload(512 * KiB))
    async with asyncio.timeout(TIMEOUT):
        await sink.closed.wait()
    assert sink.received == [70_001] and proxy.bytes_up == 70_001 and proxy.cuts == 1


async def test_a_downstream_cut_leaves_uploads_alone_and_both_counts_each_way(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    sink = await serve(_sink)
    proxy = await fault_proxy(sink.port, Faults(cut_after=1000))  # direction down
    await _exchange(proxy.port, _payload(200 * KiB))
    async with asyncio.timeout(TIMEOUT):
        await sink.closed.wait()
    assert sink.received == [200 * KiB] and proxy.cuts == 0
    proxy.faults = Faults(cut_after=5000, direction="both")
    echo = await serve(_echo)
    proxy.target_port = echo.port
    proxy.reset_counts()
    payload = _payload(64 * KiB)
    back = await _exchange(proxy.port, payload)
    # the request reaches 5000 bytes first: the cut comes before the whole echo is back
    assert payload.startswith(back) and len(back) <= 5000
    assert proxy.bytes_up == 5000 and proxy.cuts == 1


async def test_seeded_cuts_are_random_and_the_same_for_the_same_seed(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    echo = await serve(_echo)
    payload = _payload(64 * KiB)
    lengths: list[list[int]] = []
    for _ in range(2):
        proxy = await fault_proxy(echo.port, Faults(cut_after=10_000, seed=7))
        lengths.append([len(await _exchange(proxy.port, payload)) for _ in range(6)])
    draws = random.Random(7)
    assert lengths[0] == lengths[1] == [draws.randint(1, 19_999) for _ in range(6)]
    assert len(set(lengths[0])) > 1


async def test_latency_delays_each_direction(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    echo = await serve(_echo)
    proxy = await fault_proxy(echo.port, Faults(latency=0.15))
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        async with asyncio.timeout(TIMEOUT):
            for _ in range(2):
                began = time.monotonic()
                writer.write(b"ping")
                await writer.drain()
                assert await reader.readexactly(4) == b"ping"
                # one way up, one way down: at least twice the latency
                assert time.monotonic() - began >= 0.3
    finally:
        writer.close()
        await writer.wait_closed()
    # a pipeline, not a stop-and-wait: 2 MiB in pieces still crosses in about one latency
    payload = _payload(2048 * KiB)
    assert await _exchange(proxy.port, payload) == payload


async def test_the_rate_cap_is_shared_by_every_connection(
    serve: Callable[[Handler], Awaitable[Server]], fault_proxy: StartProxy,
) -> None:
    sink = await serve(_sink)
    rate = 1024 * KiB
    proxy = await fault_proxy(sink.port, Faults(rate=rate))
    began = time.monotonic()
    await asyncio.gather(*(_exchange(proxy.port, _payload(384 * KiB, seed)) for seed in (1, 2)))
    elapsed = time.monotonic() - began
    # 768 KiB at 1 MiB/s with a burst of a tenth of a second: at least 0.65 s
    assert elapsed >= (768 * KiB - rate / 10) / rate
    await _until(lambda: len(sink.received) == 2, "both connections ended at the sink")
    assert sorted(sink.received) == [384 * KiB, 384 * KiB] and proxy.bytes_up == 768 * KiB
    # what the echo-less sink sent back: nothing, so no rate downstream
    assert proxy.bytes_down == 0 and proxy.down_rate() is None


async def test_token_bucket_allows_its_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=100_000, burst=10_000)
    began = time.monotonic()
    await bucket.take(10_000)
    await bucket.take(30_000)
    # the first 10 kB at once, then 30 kB at 100 kB/s
    assert time.monotonic() - began >= 0.29


async def test_http_through_the_proxy_and_a_cut_body(
    fault_proxy: StartProxy,
) -> None:
    body = _payload(1024 * KiB)
    app = web.Application()

    async def blob(_: web.Request) -> web.Response:
        return web.Response(body=body)

    app.router.add_get("/blob", blob)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        faithful = await fault_proxy(port)
        cutting = await fault_proxy(port, Faults(cut_after=300 * KiB))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as http:
            async with http.get(f"http://{faithful.host}/blob") as response:
                assert await response.read() == body
            with pytest.raises(aiohttp.ClientPayloadError):
                async with http.get(f"http://{cutting.host}/blob") as response:
                    await response.read()
        assert faithful.bytes_down > len(body) and cutting.bytes_down == 300 * KiB
    finally:
        await runner.cleanup()


async def test_an_unreachable_target_closes_the_client(fault_proxy: StartProxy) -> None:
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    proxy = await fault_proxy(port)
    assert await _exchange(proxy.port, b"hello") == b""


async def test_stop_closes_every_connection_and_task_it_opened(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    sink = await serve(_sink)
    before = asyncio.all_tasks()
    proxy = FaultProxy("127.0.0.1", sink.port, Faults(latency=0.05, rate=10 * 1024 * KiB))
    await proxy.start()
    clients = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
    for _, writer in clients:
        writer.write(b"x" * 1000)
        await writer.drain()
    # all three connected through, and mid-stream
    await _until(lambda: proxy.bytes_up == 3000, "three connections through")
    await proxy.stop()
    assert not proxy.running
    assert asyncio.all_tasks() - before == {asyncio.current_task()} - before
    for reader, writer in clients:
        async with asyncio.timeout(TIMEOUT):
            with contextlib.suppress(ConnectionError):  # a reset is as good as an end
                assert await reader.read() == b""
        writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    await _until(lambda: len(sink.received) == 3, "the target's side closed too")
