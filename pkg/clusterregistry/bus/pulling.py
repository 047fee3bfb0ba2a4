"""Durable pull consumers: batches of messages, acknowledged one by one, redelivered if not.

A consumer is declared by the process that reads it (created or updated to
the settings it needs, like streams), and read with explicit acks: a message
is acked only once its effect is stored, so a crash in between redelivers it
after `ack_wait`. `max_ack_pending` bounds what is out at once across every
process pulling from the consumer (the tracker's replicas share one). Nothing
here promises order across those processes: readers that need "everything
before this message is done" (relist end markers) check the consumer's ack floor.

Messages come out as `Pulled`, whose settlements (ack, nak, term, in progress)
never raise a library error: a settlement lost on the way (the connection
closed, the message already settled) only means JetStream hands the message
out again after `ack_wait`, which every consumer here is written to tolerate,
so the service is told (False) and goes on instead of dying on it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.translating import translating
from clusterregistry.errors import (
    ClusterRegistryError,
    NotFoundError,
    RetryableError,
    TimedOutError,
)

log = logging.getLogger(__name__)


class Pulled:
    """One message from a pull consumer: its subject and data, and how to settle it."""

    __slots__ = ("_msg", "data", "subject")

    def __init__(self, msg: Msg) -> None:
        self._msg = msg
        self.subject: str = msg.subject
        self.data: bytes = msg.data

    def __repr__(self) -> str:
        return f"Pulled({self.subject!r}, {len(self.data)} bytes)"

    # parsed from the reply subject on each call: read them only where needed
    @property
    def stream_sequence(self) -> int:
        return int(self._msg.metadata.sequence.stream)

    @property
    def delivered(self) -> int:
        """How many times JetStream has handed this message out, this time included."""
        return int(self._msg.metadata.num_delivered or 1)

    async def ack(self, *, confirmed: bool = False) -> bool:
        """Done with it. `confirmed`: wait for the server to record the ack (a work
        queue removes the message then), not only send it."""
        if confirmed:
            return await self._settle("ack", self._msg.ack_sync)
        return await self._settle("ack", self._msg.ack)

    async def nak(self, *, delay: float | None = None) -> bool:
        """Hand it out again, after `delay` seconds (None: at once)."""
        return await self._settle("nak", lambda: self._msg.nak(delay=delay))

    async def term(self) -> bool:
        """Never hand it out again (it cannot be handled, ever)."""
        return await self._settle("term", self._msg.term)

    async def in_progress(self) -> bool:
        """Still working on it: restart its `ack_wait` timer."""
        return await self._settle("in progress", self._msg.in_progress)

    async def _settle(self, what: str, send: Callable[[], Awaitable[object]]) -> bool:
        try:
            with translating(f"{what} of {self.subject} not delivered (it comes back after "
                             "ack_wait)"):
                await send()
        except ClusterRegistryError as exc:  # connection lost, ack_sync timed out, settled
            log.warning("%s", exc)
            return False
        return True


@dataclass(frozen=True)
class ConsumerSpec:
    stream: str
    durable: str
    filter_subject: str
    ack_wait: float = 30.0
    max_ack_pending: int = 256
    # where a new durable starts: the whole stream (state is rebuilt from it) or new messages
    deliver_new: bool = False
    # a durable nobody reads for this long is removed by the server (0: never)
    inactive_threshold: float = 0.0


class Puller:
    """Fetch batches from one durable consumer."""

    def __init__(self, bus: Bus, spec: ConsumerSpec) -> None:
        self._bus = bus
        self.spec = spec
        self._sub: JetStreamContext.PullSubscription | None = None
        self._what = f"consumer {spec.durable} on {spec.stream}"

    async def start(self) -> None:
        """Create the consumer or bring it to `spec`, and bind to it.

        RetryableError when NATS cannot answer now or the stream does not exist yet;
        PermanentError when the server refuses the settings (a deliver policy that
        differs from the existing consumer's, say)."""
        spec = self.spec
        js = self._bus._js
        config = ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=spec.ack_wait,
            max_ack_pending=spec.max_ack_pending,
            max_deliver=-1,
            filter_subject=spec.filter_subject,
            deliver_policy=DeliverPolicy.NEW if spec.deliver_new else DeliverPolicy.ALL,
            inactive_threshold=spec.inactive_threshold or None,
        )
        try:
            with translating(self._what):
                info = await js.consumer_info(spec.stream, spec.durable)
        except NotFoundError:
            try:
                with translating(self._what):
                    await js.add_consumer(spec.stream, config)
            except NotFoundError as exc:
                # no stream yet: the process that owns it (the relay, the reconciler)
                # creates it at its start, and this one retries its own
                raise RetryableError(f"{exc}: no stream {spec.stream} yet") from exc.__cause__
        else:
            current = info.config
            if (current.ack_wait != spec.ack_wait
                    or current.max_ack_pending != spec.max_ack_pending
                    or current.filter_subject != spec.filter_subject):
                # the server refuses to change deliver_policy; these it updates in place
                with translating(self._what):
                    await js.add_consumer(spec.stream, config)
        with translating(self._what):
            self._sub = await js.pull_subscribe_bind(spec.durable, stream=spec.stream)

    async def fetch(self, batch: int, *, timeout: float = 1.0) -> list[Pulled]:
        """Up to `batch` messages; [] when none arrived within `timeout`."""
        if self._sub is None:
            raise RuntimeError("Puller.start() first")
        try:
            with translating(f"fetch from {self.spec.durable}"):
                return [Pulled(msg) for msg in await self._sub.fetch(batch, timeout=timeout)]
        except TimedOutError:
            return []

    async def ack_floor(self) -> int:
        """The stream sequence up to which every message of the consumer is acked (by any
        process reading it). Flushes first, so that this connection's acks sent so far
        have reached the server; the server may still be applying them, though, so a
        caller waiting for its own acks looks again a little later."""
        await self._bus.flush()
        with translating(self._what):
            info = await self._bus._js.consumer_info(self.spec.stream, self.spec.durable)
        return info.ack_floor.stream_seq if info.ack_floor is not None else 0

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                with translating(f"unsubscribing {self.spec.durable}"):
                    await self._sub.unsubscribe()
            except ClusterRegistryError as exc:  # a closed connection: nothing left to release
                log.debug("%s", exc)
            self._sub = None
