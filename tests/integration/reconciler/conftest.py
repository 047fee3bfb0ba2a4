"""The reconciler's world: kubesim with its controllers (Deployments, Jobs, DaemonSets,
StatefulSets really make ReplicaSets and pods) and the Artifact CRD, a real nats-server, the
real relay and tracker, and the fake mirror worker of tests/integration/tracker/worlds.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from clusterregistry_sandbox.natsservers import NatsServer
from kubesim.resources import Resource
from kubesim.running import Cluster
from tests.integration.tracker.worlds import NAMESPACE, Services


@pytest.fixture
async def world(kube_cluster: Cluster, artifact_crd_installed: Resource,
                nats_server: NatsServer) -> AsyncIterator[Services]:
    namespaces = kube_cluster.api.lookup("", "v1", "namespaces")
    for name in (NAMESPACE, "nf", "other"):
        await kube_cluster.api.create(namespaces, {"metadata": {"name": name}})
    services = Services(kube_cluster, nats_server)
    try:
        yield services
    finally:
        await services.close()
