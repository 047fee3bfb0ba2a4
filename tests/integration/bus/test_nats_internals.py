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
