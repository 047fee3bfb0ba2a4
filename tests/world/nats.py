"""Fixtures: a JetStream nats-server per test, and a three-node JetStream cluster; and a bare
nats-py client for tests to look at what the product stored.

Function-scoped on purpose: fault tests kill and restart these servers, so
no state or process may leak into the next test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from clusterregistry_sandbox.natsservers import NatsCluster, NatsServer


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    """A started nats-server with JetStream on 127.0.0.1 (random port, own store dir)."""
    server = NatsServer(tmp_path / "nats")
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def nats_cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    """A started three-node JetStream cluster with an elected meta leader."""
    cluster = NatsCluster(tmp_path / "nats-cluster")
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def nats_client(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A bare nats-py client of `nats_server`, an outside client as the nats CLI is one."""
    nc = await nats.connect(nats_server.url, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[JetStreamContext]:
    """A bare nats-py JetStream client on its own connection, closed on the way out.

    Tests set up and inspect streams, consumers and buckets with it as an outside client
    (the `nats` CLI) would: the product's `Bus` keeps its nats-py objects private to
    `clusterregistry.bus`, and a test reaching into them would test nothing the services do.
    """
    nc = await nats.connect(url, connect_timeout=5)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def interest(server: NatsServer, subject: str) -> str:
    """What the server says of `subject` and its clients (monitoring: `subsz` matching it,
    each connection's subscriptions and message counts): for a test's failure message when
    a core subscriber saw nothing, to tell a missing subscription from an undelivered or
    unread message."""
    if not server.monitor_url:
        return "no monitoring port"
    parts = []
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for path in (f"subsz?subs=1&test={subject}", "connz?subs=1"):
            try:
                async with session.get(f"{server.monitor_url}/{path}") as response:
                    parts.append(f"{path}: {await response.text()}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                parts.append(f"{path}: {exc!r}")
    return "\n".join(parts)
