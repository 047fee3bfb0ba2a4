"""Publishing to JetStream in acknowledged batches, retried until stored, never doubled.

A batch is published with publish_async (pipelined, no round trip per
message) and then every acknowledgement is awaited. Anything short of a full
set of acks (NATS down, a leader election, a timeout) republishes the whole
batch, in order: what JetStream already stored comes back as a duplicate ack
thanks to Nats-Msg-Id, so a retry can neither lose nor double a message, and
the stream keeps the batch's order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterregistry.bus.connecting import Bus
from clusterregistry.subjects import MSG_ID_HEADER

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outgoing:
    subject: str
    payload: bytes
    msg_id: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    stored: int
    duplicates: int
    attempts: int


class Publisher:
    def __init__(
        self,
        bus: Bus,
        *,
        ack_timeout: float = 5.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        on_retry: Callable[[Exception], None] | None = None,
    ) -> None:
        self.bus = bus
        self.ack_timeout = ack_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.on_retry = on_retry

    async def publish(self, batch: Sequence[Outgoing]) -> BatchResult:
        """Publish `batch` and return once every message is stored (retrying forever)."""
        delay = self.backoff_initial
        attempts = 0
        while True:
            attempts += 1
            futures: list[asyncio.Future[Any]] = []
            try:
                for message in batch:
                    headers = {MSG_ID_HEADER: message.msg_id, **message.headers}
                    futures.append(await self.bus.js.publish_async(
                        message.subject, message.payload, headers=headers,
                        wait_stall=self.ack_timeout))
                acks = await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout)
            except asyncio.CancelledError:
                for future in futures:
                    future.cancel()
                raise
            except Exception as exc:
                # Acks that never come (the server restarted, the ack was lost) would hold
                # publish_async's pending slots forever: cancel them, then retry the batch.
                for future in futures:
                    future.cancel()
                if self.on_retry is not None:
                    self.on_retry(exc)
                log.warning("publish of %d messages failed (attempt %d): %s; retrying in %.1fs",
                            len(batch), attempts, exc or type(exc).__name__, delay)
                await asyncio.sleep(delay)  # back-off before republishing the same batch
                delay = min(delay * 2, self.backoff_max)
                continue
            duplicates = sum(1 for ack in acks if getattr(ack, "duplicate", False))
            return BatchResult(stored=len(batch) - duplicates, duplicates=duplicates,
                               attempts=attempts)
