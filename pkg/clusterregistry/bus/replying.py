"""Request and reply over core NATS: a question any one replica of a service answers.

`clusterregistry gc run-once` asks the running GC for a run (`subjects.GC_RUN_REQUEST`).
The GC replicas subscribe in one queue group, so NATS hands each request to exactly one
of them; the answer goes to the request's reply inbox. Nothing is stored: a request
nobody is subscribed to fails at once with "no responders" (NATS 2.2+ headers), and a
reply that outlives its requester's timeout is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.translating import translating
from clusterregistry.errors import ClusterRegistryError

log = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[bytes]]


async def request(bus: Bus, subject: str, payload: bytes, *, timeout: float) -> bytes:
    """The answer to `payload` on `subject`; RetryableError when none comes in `timeout`
    (nobody subscribed: no responders, at once; a responder too slow: TimedOutError)."""
    with translating(f"no answer on {subject} within {timeout:g}s"):
        reply = await bus._nc.request(subject, payload, timeout=timeout)
    return bytes(reply.data)


class Responder:
    """Answers requests on `subject` as one member of `queue`, each in its own task.

    A handler may take long (a whole GC run): it runs in a task beside the subscription,
    which keeps taking requests. `stop` unsubscribes; the answers still running
    (`running`) are the caller's to wait for or cancel.
    """

    def __init__(self, bus: Bus, subject: str, *, queue: str, handle: Handler) -> None:
        self._bus = bus
        self._subject = subject
        self._queue = queue
        self._handle = handle
        self._subscription: Subscription | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with translating(f"cannot subscribe to {self._subject}"):
            self._subscription = await self._bus._nc.subscribe(
                self._subject, queue=self._queue, cb=self._received)

    async def _received(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer(msg))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, msg: Msg) -> None:
        answer = await self._handle(msg.data or b"")
        if not msg.reply:
            return  # published, not requested: nobody to answer
        try:
            with translating(f"cannot answer on {self._subject}"):
                await msg.respond(answer)
        except ClusterRegistryError as exc:  # the requester gave up, or the connection went
            log.warning("%s", exc)

    @property
    def running(self) -> frozenset[asyncio.Task[None]]:
        return frozenset(self._running)

    async def stop(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                with translating(f"unsubscribing {self._subject}"):
                    await subscription.unsubscribe()
            except ClusterRegistryError as exc:  # a closed connection has no subscription left
                log.debug("%s", exc)
