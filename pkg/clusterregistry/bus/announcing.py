"""Core NATS news: fire-and-forget messages that no stream stores (mirror progress).

Some messages are only worth something while they are fresh: a running copy's
bytes done, every few seconds. JetStream would store each, acknowledge each,
and keep the ones nobody read; a later message makes an earlier one worthless
anyway, and the outcome that matters (the MirrorResult) travels durably. So
these go over core NATS: at most once, to whoever is subscribed now, nothing
kept. A message published while nobody listens, or while the connection is
down, is simply gone; callers must be fine with that (the next one replaces it).

`Listener` subscribes in a queue group, so among a service's replicas each
message reaches one. Its handler is synchronous and must be cheap (remember
the message, wake a loop): nats-py calls a subscription's handler for one
message at a time, and a slow one would let its pending buffer overflow
(messages dropped, which is harmless here but pointless).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clusterregistry.bus.connecting import Bus, round_trip
from clusterregistry.bus.translating import translating
from clusterregistry.errors import ClusterRegistryError

log = logging.getLogger(__name__)

__all__ = ["Listener", "announce"]


async def announce(bus: Bus, subject: str, payload: bytes) -> bool:
    """Publish on core NATS; False (logged at debug) when it cannot go now. Never raises
    for the connection's troubles: the message is news, and news may be lost."""
    try:
        with translating(f"announcing on {subject}"):
            # nats-py buffers a publish while it reconnects (up to its pending size), so a
            # short outage delays rather than drops; nothing waits for the server here
            await bus._nc.publish(subject, payload)
    except ClusterRegistryError as exc:
        log.debug("%s", exc)
        return False
    return True


class Listener:
    """Calls `handle(subject, data)` for each message on `subject`, as one of `queue`."""

    def __init__(self, bus: Bus, subject: str, *, queue: str,
                 handle: Callable[[str, bytes], None]) -> None:
        self._bus = bus
        self._subject = subject
        self._queue = queue
        self._handle = handle
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        """Subscribe (RetryableError when NATS is away); in effect on the server on return."""
        with translating(f"cannot subscribe to {self._subject}"):
            self._subscription = await self._bus._nc.subscribe(
                self._subject, queue=self._queue, cb=self._received)
            # a round trip: the server has the subscription before anyone is told we listen
            await round_trip(self._bus._nc)

    async def _received(self, msg: Msg) -> None:
        try:
            self._handle(msg.subject, msg.data or b"")
        except asyncio.CancelledError:
            raise
        except Exception:  # a handler's bug must not end the subscription's task
            log.exception("handling a message on %s", msg.subject)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                with translating(f"unsubscribing {self._subject}"):
                    await subscription.unsubscribe()
            except ClusterRegistryError as exc:  # a closed connection has no subscription
                log.debug("%s", exc)
