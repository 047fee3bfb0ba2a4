"""Connecting to NATS: one connection per process, reconnecting forever.

A process that loses NATS must not die: nats-py reconnects in the background
(max_reconnect_attempts=-1) while publishers wait or retry, and a restart of
the process would lose nothing more than a reconnect does.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext

from clusterregistry.errors import RetryableError

log = logging.getLogger(__name__)


@dataclass
class Bus:
    """A NATS connection and its JetStream context."""

    nc: Client
    js: JetStreamContext

    @property
    def max_payload(self) -> int:
        return int(self.nc.max_payload)

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self, *, drain_timeout: float = 5.0) -> None:
        """Drain (deliver what is buffered) within `drain_timeout`, then close regardless."""
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), drain_timeout)
        except Exception:  # a broken connection or acks that never come: close it anyway
            await self.nc.close()


async def connect(
    servers: Sequence[str],
    *,
    name: str,
    connect_timeout: float = 5.0,
    first_connect_timeout: float = 30.0,
    publish_async_max_pending: int = 4000,
) -> Bus:
    """Connect within `first_connect_timeout` (nats-py would retry a first connection for
    ever with unlimited reconnects), then reconnect for ever."""
    connected: list[Client] = []

    async def disconnected() -> None:
        if connected and (connected[0].is_closed or connected[0].is_draining):
            return  # our own close(), not a lost server
        log.warning("nats disconnected; reconnecting")

    async def reconnected() -> None:
        log.info("nats reconnected")

    async def error(exc: Exception) -> None:
        log.warning("nats error: %s", exc)

    try:
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
    except Exception as exc:
        raise RetryableError(f"cannot connect to NATS at {', '.join(servers)}: {exc}") from exc
    connected.append(nc)
    return Bus(nc=nc, js=nc.jetstream(publish_async_max_pending=publish_async_max_pending))
