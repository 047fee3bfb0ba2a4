"""The tracker's world: kubesim without controllers (every object is made by the test, so
every expected record is known), a real nats-server, the real relay."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clusterregistry_sandbox.natsservers import NatsServer
from kubesim.running import Cluster
from tests.integration.tracker.worlds import NAMESPACE, Services


@pytest.fixture
async def services(kube_api: Cluster, nats_server: NatsServer) -> AsyncIterator[Services]:
    namespaces = kube_api.api.lookup("", "v1", "namespaces")
    for name in (NAMESPACE, "nf", "other"):
        await kube_api.api.create(namespaces, {"metadata": {"name": name}})
    world = Services(kube_api, nats_server)
    try:
        yield world
    finally:
        await world.close()
