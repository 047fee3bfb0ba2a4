"""Connecting to NATS: one connection per process, reconnecting forever.

A process that loses NATS must not die: nats-py reconnects in the background
(max_reconnect_attempts=-1) while publishers wait or retry, and a restart of
the process would lose nothing more than a reconnect does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from clusterregistry.bus.translating import translating
from clusterregistry.errors import RetryableError

log = logging.getLogger(__name__)


class Bus:
    """One NATS connection and its JetStream context, behind what the services need.

    The nats-py client and JetStream context are private (`_nc`, `_js`): only the
    adapters in `clusterregistry.bus` use them, each call inside `translating`, so a
    service never sees a nats-py object or exception (tests/unit/test_static_checks.py
    checks that nothing outside `bus/` reaches for them).
    """

    __slots__ = ("_js", "_nc")

    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self._nc = nc
        self._js = js

    @property
    def connected(self) -> bool:
        """Connected now (False while nats-py reconnects, and once closed)."""
        return bool(self._nc.is_connected)

    @property
    def closed(self) -> bool:
        """Closed for good: nothing on this connection will work again."""
        return bool(self._nc.is_closed)

    @property
    def max_payload(self) -> int:
        return int(self._nc.max_payload)

    async def flush(self, *, timeout: float = 5.0) -> None:
        """Until the server has processed everything sent so far (a round trip): what this
        connection published or subscribed is in effect on the server afterwards.
        TimedOutError (a RetryableError) when no answer comes in `timeout`."""
        with translating("flushing the NATS connection"):
            await round_trip(self._nc, timeout=timeout)

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, *, drain_timeout: float = 5.0) -> None:
        """Drain (deliver what is buffered) within `drain_timeout`, then close regardless.

        `drain_timeout=0`: close at once, dropping what is buffered, as a crash would
        (unacked messages come back to another consumer after their ack_wait).
        """
        if self._nc.is_closed:
            return
        if drain_timeout <= 0:
            await self._nc.close()
            return
        try:
            with translating("draining the NATS connection"):
                await asyncio.wait_for(self._nc.drain(), drain_timeout)
        except RetryableError as exc:  # a broken connection, or acks that never come
            log.debug("%s; closing anyway", exc)
        finally:
            if not self._nc.is_closed:
                await self._nc.close()


async def round_trip(nc: Client, *, timeout: float = 5.0) -> None:
    """nats-py's `flush`, with what it does not promise: the server has seen every command
    sent before. nats-py writes flush's PING straight to the socket, ahead of commands still
    queued for its flusher task (a SUB just made goes through that queue), so the PONG may
    come back before the server has the SUB, and a publish from another connection then
    finds nobody listening (seen on a loaded machine). The queue goes to the socket first."""
    if getattr(nc, "_flush_pending", None) is not None:  # nats-py 2.x; see bus.publishing
        await asyncio.wait_for(nc._flush_pending(force_flush=True), timeout)
    await nc.flush(timeout=max(1, round(timeout)))


async def connect(
    servers: Sequence[str],
    *,
    name: str,
    connect_timeout: float = 5.0,
    first_connect_timeout: float = 30.0,
    publish_async_max_pending: int = 4000,
) -> Bus:
    """Connect within `first_connect_timeout` (nats-py would retry a first connection for
    ever with unlimited reconnects), then reconnect for ever.

    RetryableError when no server answered in time; PermanentError when one refused us
    (authorization, TLS required): retrying with the same settings cannot succeed.
    """
    connected: list[Client] = []

    async def disconnected() -> None:
        if connected and (connected[0].is_closed or connected[0].is_draining):
            return  # our own close(), not a lost server
        log.warning("nats disconnected; reconnecting")

    async def reconnected() -> None:
        log.info("nats reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    with translating(f"cannot connect to NATS at {', '.join(servers)}"):
        nc = await asyncio.wait_for(nats.connect(
            servers=list(servers),
            name=name,
            connect_timeout=connect_timeout,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        ), first_connect_timeout)
    connected.append(nc)
    return Bus(nc, nc.jetstream(publish_async_max_pending=publish_async_max_pending))
