"""nats-py's private members the publish pipeline uses, one test each, on the installed nats-py.

`bus.publishing.Pipeline` writes a batch of HPUB commands to the connection at once through
`Client._send_command` and wakes nats-py's flusher through `_flush_queue` and
`_flush_pending`, as `Client.publish` does for one message (docs/architecture.md: the
relay's publishing costs a third of what nats-py's publish would). They are private, so
pyproject.toml bounds nats-py above; before raising that bound, these must pass on the new
version. If one fails, `publishing._direct` would quietly fall back to `Client.publish`
(correct, but slow): `test_the_pipeline_uses_the_direct_path` says so first.
"""

from __future__ import annotations

import asyncio
import inspect

import nats
import pytest
from nats.aio.client import Client

from clusterregistry.bus import publishing
from clusterregistry.bus.connecting import round_trip

pytestmark = pytest.mark.integration


@pytest.fixture
def client(nats_client: Client) -> Client:
    return nats_client


def test_the_pipeline_uses_the_direct_path() -> None:
    assert publishing.DIRECT_INTERNALS == ("_send_command", "_flush_pending", "_flush_queue")
    for name in ("_send_command", "_flush_pending"):
        assert inspect.iscoroutinefunction(getattr(Client, name)), name


async def test_the_direct_path_is_taken_on_a_connection(client: Client) -> None:
    assert publishing._direct(client)


async def test_send_command_queues_a_protocol_line_unflushed(client: Client) -> None:
    """`_send_command(cmd, priority=False)` appends raw protocol bytes to what the flusher
    writes next, and writes nothing by itself (unless the pending buffer is over its limit)."""
    assert list(inspect.signature(Client._send_command).parameters) == [
        "self", "cmd", "priority"]
    sub = await client.subscribe("internals.send")
    await client.flush()
    await client._send_command(b"PUB internals.send 2\r\nhi\r\n")
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=0.3)  # queued, not written: nobody woke the flusher
    await client.flush()  # a PING behind it on the same buffer writes both
    assert (await sub.next_msg(timeout=5)).data == b"hi"


async def test_flush_pending_wakes_the_flusher(client: Client) -> None:
    """`_flush_pending()` makes the flusher write what `_send_command` queued, without a
    round trip: the whole batch of HPUB commands arrives, headers and reply subjects intact."""
    assert list(inspect.signature(Client._flush_pending).parameters) == [
        "self", "force_flush"]
    sub = await client.subscribe("internals.flush.*")
    await client.flush()
    header = b"NATS/1.0\r\nNats-Msg-Id: m1\r\n\r\n"
    commands = [b"HPUB internals.flush.%d _INBOX.r.%d %d %d\r\n%b%b\r\n" % (
        i, i, len(header), len(header) + 3, header, b"p-%d" % i) for i in range(3)]
    await client._send_command(b"".join(commands))
    await client._flush_pending()
    got = [await sub.next_msg(timeout=5) for _ in range(3)]
    assert [(m.subject, m.reply, m.data) for m in got] == [
        (f"internals.flush.{i}", f"_INBOX.r.{i}", b"p-%d" % i) for i in range(3)]
    assert all(m.headers == {"Nats-Msg-Id": "m1"} for m in got)


async def test_flush_queue_is_the_flushers_queue(client: Client) -> None:
    """`_flush_queue`: an asyncio.Queue of futures the flusher takes; empty means no
    wake-up is pending, so a writer adds one (the check `Client.publish` makes)."""
    queue = client._flush_queue
    assert isinstance(queue, asyncio.Queue)
    assert queue.empty()  # the flusher is idle and waits on it
    await client._send_command(b"PING\r\n")
    await client._flush_pending()
    await asyncio.sleep(0)  # the flusher takes its wake-up
    await client.flush()
    assert queue.empty()


async def test_publish_still_does_what_the_direct_path_copies(client: Client) -> None:
    """The direct path mirrors `Client._send_publish`: stats, then `_send_command`, then
    `_flush_pending` if the flusher queue is empty. A publish that stopped going through
    them would mean the copy no longer matches nats-py."""
    source = inspect.getsource(Client._send_publish)
    assert "self._send_command(" in source
    assert "self._flush_queue.empty()" in source
    assert "self._flush_pending()" in source
    assert 'self.stats["out_msgs"]' in source


class _RecordingServer:
    """Just enough of a NATS server for one client: INFO, a PONG for every PING, and every
    protocol line the client sends, in the order they reached the socket."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b'INFO {"server_id":"rec","version":"2.15.1","proto":1,"headers":true,'
                     b'"max_payload":1048576}\r\n')
        while line := await reader.readline():
            self.lines.append(line.strip())
            if line.startswith(b"PING"):
                writer.write(b"PONG\r\n")
                await writer.drain()
        writer.close()

    def after_connect(self) -> list[bytes]:
        """What came after the handshake's CONNECT and PING."""
        return self.lines[2:]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_flush_writes_its_ping_ahead_of_a_queued_sub_and_round_trip_does_not() -> None:
    """Why `bus.connecting.round_trip` exists: nats-py's `flush` writes PING straight to the
    socket while a SUB just made still waits for the flusher task, so its PONG does not
    prove the server has the SUB. `round_trip` hands the queue to the socket first."""
    recording = _RecordingServer()
    port = await recording.start()
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}", connect_timeout=5,
                                allow_reconnect=False)
        try:
            await nc.subscribe("order.plain")
            await nc.flush()
            plain = list(recording.after_connect())
            await nc.subscribe("order.round")
            await round_trip(nc)
            ordered = recording.after_connect()[len(plain):]
        finally:
            await nc.close()
    finally:
        await recording.stop()
    assert plain[:2] == [b"PING", b"SUB order.plain  1"], plain
    assert ordered[:2] == [b"SUB order.round  2", b"PING"], ordered
