"""Durable pull consumers: batches of messages, acknowledged one by one, redelivered if not.

A consumer is declared by the process that reads it (created or updated to
the settings it needs, like streams), and read with explicit acks: a message
is acked only once its effect is stored, so a crash in between redelivers it
after `ack_wait`. `max_ack_pending` bounds what is out at once across every
process pulling from the consumer (the tracker's replicas share one). Nothing
here promises order across those processes: readers that need "everything
before this message is done" (relist end markers) check the consumer's ack floor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from clusterregistry.errors import RetryableError

log = logging.getLogger(__name__)


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

    def __init__(self, js: JetStreamContext, spec: ConsumerSpec) -> None:
        self.js = js
        self.spec = spec
        self._sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        spec = self.spec
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
            try:
                info = await self.js.consumer_info(spec.stream, spec.durable)
            except nats.js.errors.NotFoundError:
                await self.js.add_consumer(spec.stream, config)
            else:
                current = info.config
                if (current.ack_wait != spec.ack_wait
                        or current.max_ack_pending != spec.max_ack_pending
                        or current.filter_subject != spec.filter_subject):
                    # the server refuses to change deliver_policy; these it updates in place
                    await self.js.add_consumer(spec.stream, config)
            self._sub = await self.js.pull_subscribe_bind(spec.durable, stream=spec.stream)
        except Exception as exc:
            raise RetryableError(
                f"consumer {spec.durable} on {spec.stream}: {exc}") from exc

    async def fetch(self, batch: int, *, timeout: float = 1.0) -> list[Msg]:
        """Up to `batch` messages; [] when none arrived within `timeout`."""
        if self._sub is None:
            raise RuntimeError("Puller.start() first")
        try:
            return await self._sub.fetch(batch, timeout=timeout)
        except (nats.errors.TimeoutError, TimeoutError):
            return []
        except Exception as exc:
            raise RetryableError(f"fetch from {self.spec.durable}: {exc}") from exc

    async def stop(self) -> None:
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception as exc:  # a closed connection: nothing left to release
                log.debug("unsubscribing %s: %s", self.spec.durable, exc)
            self._sub = None
