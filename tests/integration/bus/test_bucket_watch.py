"""A bucket watch against a real nats-server: every key, the end of the initial values,
then changes, each with the revision a reader orders it by against a snapshot."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import pytest

from clusterregistry.bus.connecting import connect
from clusterregistry.bus.keyvalues import Change, Records, watch_bucket
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.errors import RetryableError
from clusterregistry_sandbox.natsservers import NatsServer

pytestmark = pytest.mark.integration


class Note(msgspec.Struct, frozen=True):
    text: str


decode = msgspec.json.Decoder(Note).decode


async def test_changes_carry_their_revisions(nats_server: NatsServer) -> None:
    stop = asyncio.Event()
    async with await connect([nats_server.url], name="kv-watch") as bus:
        records = Records(await ensure_bucket(bus, name="kv-watch"), decode)
        a = await records.write("a", Note("a"), revision=0)
        b = await records.write("b", Note("b"), revision=0)
        seen: list[Change | None] = []
        async with asyncio.timeout(30):
            async with contextlib.aclosing(watch_bucket(bus, "kv-watch", stop=stop,
                                                        poll=0.2)) as changes:
                async for change in changes:
                    seen.append(change)
                    if change is None:
                        a2 = await records.write("a", Note("a2"), revision=a)
                        await records.delete("b", revision=b)
                    elif len(seen) == 5:
                        stop.set()
        b_deleted = (await records.read("b")).revision
        assert seen == [
            Change("a", msgspec.json.encode(Note("a")), a),
            Change("b", msgspec.json.encode(Note("b")), b),
            None,
            Change("a", msgspec.json.encode(Note("a2")), a2),
            Change("b", None, b_deleted),
        ]


async def test_a_missing_bucket_is_retryable(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="kv-watch-missing") as bus:
        with pytest.raises(RetryableError):
            async with contextlib.aclosing(watch_bucket(bus, "kv-none", stop=asyncio.Event(),
                                                        poll=0.2)) as changes:
                async for _ in changes:
                    pass
