"""Fixtures: a JetStream nats-server per test, and a three-node JetStream cluster.

Function-scoped on purpose: fault tests kill and restart these servers, so
no state or process may leak into the next test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clusterregistry.sandbox.natsservers import NatsCluster, NatsServer


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
