"""Pull consumers against a real nats-server: what a `Pulled` message says about itself,
and settlements that never raise a library error (a lost one only means redelivery)."""

from __future__ import annotations

import logging

import pytest

from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.pulling import ConsumerSpec, Pulled, Puller
from clusterregistry.bus.streams import ensure_stream, publish
from clusterregistry_sandbox.natsservers import NatsServer
from clusterregistry_sandbox.supervising import wait_for
from tests.world.nats import jetstream

pytestmark = pytest.mark.integration


async def _work_queue(bus: Bus, name: str, *, ack_wait: float) -> Puller:
    """A work-queue stream `name` on `<name>.>` (kept if there), and its consumer `w`."""
    prefix = name.lower()
    await ensure_stream(bus, name=name, subjects=[f"{prefix}.>"], work_queue=True)
    puller = Puller(bus, ConsumerSpec(stream=name, durable="w", filter_subject=f"{prefix}.>",
                                         ack_wait=ack_wait))
    await puller.start()
    return puller


async def _one(puller: Puller) -> Pulled:
    for _ in range(20):  # each fetch waits up to 0.5 s: 10 s in all
        messages = await puller.fetch(1, timeout=0.5)
        if messages:
            (msg,) = messages
            return msg
    raise AssertionError("no message was delivered in 10 s")


async def test_pulled_messages_say_where_they_are_and_settle(nats_server: NatsServer) -> None:
    async with (await connect([nats_server.url], name="pulling-settle") as bus,
                jetstream(nats_server.url) as js):
        puller = await _work_queue(bus, "Q", ack_wait=30.0)
        await publish(bus, "q.job", b"one")
        first = await _one(puller)
        assert (first.subject, first.data, first.stream_sequence, first.delivered) == (
            "q.job", b"one", 1, 1)
        # a nak hands it out again at once, counted as a second delivery
        assert await first.nak() is True
        again = await _one(puller)
        assert (again.data, again.stream_sequence, again.delivered) == (b"one", 1, 2)
        assert await again.in_progress() is True
        for body in (b"two", b"three"):
            await publish(bus, "q.job", body)
        # a confirmed ack returns once the work queue has dropped the message
        assert await again.ack(confirmed=True) is True
        assert (await js.stream_info("Q")).state.messages == 2

        second = await _one(puller)
        assert (second.data, second.stream_sequence) == (b"two", 2)
        assert await second.term() is True
        third = await _one(puller)
        assert await third.ack() is True

        async def drained() -> bool:
            return (await js.stream_info("Q")).state.messages == 0

        # a plain ack is sent, not confirmed: the server drops the message when it arrives
        await wait_for(drained, timeout=10, description="the work queue to drain")


async def test_a_settlement_that_cannot_be_sent_is_reported_not_raised(
    nats_server: NatsServer, caplog: pytest.LogCaptureFixture,
) -> None:
    bus = await connect([nats_server.url], name="pulling-lost")
    puller = await _work_queue(bus, "L", ack_wait=2.0)
    await publish(bus, "l.job", b"x")
    msg = await _one(puller)
    await bus.close()
    caplog.set_level(logging.WARNING, logger="clusterregistry.bus.pulling")
    # the connection is closed: nats-py raises, the service is only told False
    assert await msg.ack() is False
    assert await msg.nak(delay=1.0) is False
    assert await msg.term() is False
    assert await msg.in_progress() is False
    assert await msg.ack(confirmed=True) is False
    lost = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(lost) == 5 and all("l.job" in line for line in lost)

    # nothing was settled: JetStream hands the message out again after ack_wait
    async with await connect([nats_server.url], name="pulling-lost-again") as bus:
        puller = await _work_queue(bus, "L", ack_wait=2.0)
        back = await _one(puller)
        assert (back.data, back.delivered) == (b"x", 2)
        assert await back.ack(confirmed=True) is True
