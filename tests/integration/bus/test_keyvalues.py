"""Key-value records against a real nats-server: opening a bucket that may not exist,
creating a key only when it holds no value (tombstones included), unconditional hints,
and NATS failures reaching the caller as RetryableError, never as a nats-py error."""

from __future__ import annotations

import msgspec
import pytest

from clusterregistry.bus.connecting import connect
from clusterregistry.bus.keyvalues import Records, open_records
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.errors import ConflictError, RetryableError
from clusterregistry_sandbox.natsservers import NatsServer
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration


class Note(msgspec.Struct, frozen=True):
    text: str


decode = msgspec.json.Decoder(Note).decode


async def test_open_records_only_opens(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="kv-open") as bus:
        assert await open_records(bus, "kv-notes", decode) is None
        # opening did not create it
        assert await open_records(bus, "kv-notes", decode) is None
        kv = await ensure_bucket(bus, name="kv-notes")
        writer = Records(kv, decode)
        revision = await writer.write("a", Note("one"), revision=0)
        opened = await open_records(bus, "kv-notes", decode)
        assert opened is not None
        assert opened.name == "kv-notes"
        found = await opened.read("a")
        assert (found.value, found.revision, found.deleted) == (Note("one"), revision, False)


async def test_create_only_where_no_value(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="kv-create") as bus:
        records = Records(await ensure_bucket(bus, name="kv-create"), decode)
        first = await records.create("k", Note("first"))
        assert first > 0
        with pytest.raises(ConflictError):
            await records.create("k", Note("second"))
        assert (await records.read("k")).value == Note("first")  # the loser changed nothing

        await records.delete("k", revision=first)
        tombstone = await records.read("k")
        assert tombstone.deleted and tombstone.revision > first
        # a deleted key is created again, conditionally on its tombstone
        again = await records.create("k", Note("again"))
        assert again > tombstone.revision
        found = await records.read("k")
        assert (found.value, found.revision, found.deleted) == (Note("again"), again, False)
        with pytest.raises(ConflictError):
            await records.create("k", Note("late"))


async def test_put_overwrites_whatever_is_there(nats_server: NatsServer) -> None:
    async with await connect([nats_server.url], name="kv-put") as bus:
        records = Records(await ensure_bucket(bus, name="kv-put"), decode)
        created = await records.create("k", Note("claimed"))
        stored = await records.put("k", Note("stored"))
        assert stored > created
        # the revision read before the put is stale now: a conditional write loses
        with pytest.raises(ConflictError):
            await records.write("k", Note("stale"), revision=created)
        found = await records.read("k")
        assert (found.value, found.revision) == (Note("stored"), stored)
        fresh = await records.put("other", Note("new"))
        assert (await records.read("other")).revision == fresh


async def test_bucket_ttl_is_set_at_creation(nats_server: NatsServer) -> None:
    async with (await connect([nats_server.url], name="kv-ttl") as bus,
                jetstream(nats_server.url) as js):
        await ensure_bucket(bus, name="kv-ttl", ttl=90.0)
        await ensure_bucket(bus, name="kv-forever")
        assert (await js.stream_info("KV_kv-ttl")).config.max_age == 90.0
        assert not (await js.stream_info("KV_kv-forever")).config.max_age


async def test_nats_failures_are_retryable(nats_server: NatsServer) -> None:
    bus = await connect([nats_server.url], name="kv-closed")
    records = Records(await ensure_bucket(bus, name="kv-closed"), decode)
    revision = await records.create("k", Note("v"))
    await bus.close()
    with pytest.raises(RetryableError) as opening:
        await open_records(bus, "kv-closed", decode)
    assert type(opening.value) is RetryableError
    for attempt in (records.create("k", Note("w")), records.put("k", Note("w")),
                    records.read("k"), records.write("k", Note("w"), revision=revision)):
        with pytest.raises(RetryableError) as failed:
            await attempt
        # not a ConflictError: nothing says the key changed, NATS is just gone
        assert type(failed.value) is RetryableError


async def test_a_delete_on_a_stale_revision_is_a_conflict_and_deletes_nothing(
        nats_server: NatsServer) -> None:
    # GC deletes an artifact record on the revision it decided on; a record the reconciler
    # changed meanwhile must survive (nats-py reports this as a BadRequestError, 10071)
    async with await connect([nats_server.url], name="kv-stale-delete") as bus:
        records = Records(await ensure_bucket(bus, name="kv-stale-delete"), decode)
        decided = await records.create("k", Note("decided"))
        changed = await records.write("k", Note("changed"), revision=decided)
        with pytest.raises(ConflictError):
            await records.delete("k", revision=decided)
        found = await records.read("k")
        assert (found.value, found.revision, found.deleted) == (Note("changed"), changed, False)
