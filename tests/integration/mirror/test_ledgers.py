"""The blob ledger in real NATS KV: one claimant wins, stale claims are taken over, and a
stored location is what others mount from."""

from __future__ import annotations

import pytest

from clusterregistry.bus import ledgers
from clusterregistry.bus.connecting import connect
from clusterregistry_sandbox.natsservers import NatsServer

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "d" * 64


async def test_claims_locations_and_takeover(nats_server: NatsServer) -> None:
    bus = await connect([nats_server.url], name="ledger-test")
    try:
        kv = await ledgers.ensure_bucket(bus, ttl_seconds=60)
        a = ledgers.KvBlobLedger(kv, holder="a")
        b = ledgers.KvBlobLedger(kv, holder="b")
        patient = ledgers.KvBlobLedger(kv, holder="c", claim_seconds=3600)
        assert await a.lookup(DIGEST) is None
        assert await a.claim(DIGEST) is True
        assert await patient.claim(DIGEST) is False  # a uploads it: wait, then mount
        await patient.release(DIGEST)  # not its claim: nothing happens
        assert await patient.claim(DIGEST) is False
        await a.record(DIGEST, "nf/upf")
        assert await b.lookup(DIGEST) == "nf/upf"
        assert await b.claim(DIGEST) is False  # stored: mount it rather than upload

        other = "sha256:" + "e" * 64
        assert await a.claim(other) is True
        await a.release(other)  # a's upload failed: the blob is free again
        assert await patient.claim(other) is True
        impatient = ledgers.KvBlobLedger(kv, holder="d", claim_seconds=0.0)
        assert await impatient.claim(other) is True  # c's claim counts as stale for d
        assert await patient.claim(other) is False
    finally:
        await bus.close()


async def test_without_nats_the_ledger_only_stops_saving(nats_server: NatsServer) -> None:
    bus = await connect([nats_server.url], name="ledger-gone")
    kv = await ledgers.ensure_bucket(bus, ttl_seconds=60)
    ledger = ledgers.KvBlobLedger(kv, holder="a")
    await ledger.record(DIGEST, "nf/upf")
    assert await ledger.lookup(DIGEST) == "nf/upf"
    await bus.close()
    # a hint lost, never a failure: no mount, and every blob is uploaded
    assert await ledger.lookup(DIGEST) is None
    assert await ledger.claim(DIGEST) is True
    await ledger.record(DIGEST, "nf/other")
    await ledger.release(DIGEST)
