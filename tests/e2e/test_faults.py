"""Faults during the flow: each part of the system killed with SIGKILL (or a NATS server lost)
while a network function is being deployed, and a new image arriving while it is down; once it
is back, the end state is exact: every pod Running from the edge registry, references and
Artifacts exact, nothing pending on the bus, no image missing.

The webhook is the exception by design: with failurePolicy Ignore, a pod created while it is
down starts with its original image from the artifact store, and its image is mirrored all the
same (the tracker takes the image from the pod itself)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from clusterregistry import references, subjects
from clusterregistry_sandbox.samples import PushedSample
from clusterregistry_sandbox.scenarios import NF_NAMESPACE, PULL_SECRET, Scenario
from clusterregistry_sandbox.supervising import wait_for
from clusterregistry_sandbox.systems import System
from tests.e2e.conftest import SystemFactory
from tests.e2e.endstates import exact

pytestmark = pytest.mark.e2e


def late_deployment(sample: PushedSample, *, name: str = "nrf", replicas: int = 2) -> dict[
    str, Any
]:
    """A Deployment of an image nothing used before: created while a part is down."""
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NF_NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": name, "image": sample.reference,
                                    "imagePullPolicy": "Always"}],
                    "imagePullSecrets": [{"name": PULL_SECRET}],
                },
            },
        },
    }


@pytest.fixture
async def faulty(make_system: SystemFactory, request: pytest.FixtureRequest) -> AsyncIterator[
    tuple[System, Scenario]
]:
    system = await make_system(nats_cluster=getattr(request, "param", False))
    scenario = Scenario(system)
    try:
        yield system, scenario
    finally:
        await scenario.close()


async def _late_image_running(scenario: Scenario, sample: PushedSample, *,
                              from_edge: bool) -> list[dict[str, Any]]:
    want = scenario.system.local_registry if from_edge else scenario.system.artifact_store.host

    async def running() -> list[dict[str, Any]] | None:
        pods = [p for p in await scenario.api.list("Pod", namespace=NF_NAMESPACE)
                if (p["metadata"].get("labels") or {}).get("app") == "nrf"
                and not p["metadata"].get("deletionTimestamp")]
        ok = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
              and all(cs.get("imageID", "").startswith(want + "/")
                      for cs in p["status"].get("containerStatuses") or [{}])]
        return pods if pods and len(ok) == len(pods) else None

    return await wait_for(running, timeout=60, interval=0.3,
                          description=f"nrf pods Running from {want}")


@pytest.mark.parametrize("process", ["relay", "tracker", "reconciler"])
async def test_a_consumer_killed_during_the_flow(faulty: tuple[System, Scenario],
                                                 process: str) -> None:
    system, scenario = faulty
    await scenario.deploy()
    await system.kill(process)
    late = system.samples[3]
    await scenario.api.create(late_deployment(late))
    await system.start_service(process)
    # the reconciler's consumers redeliver what a dead one held after their ack wait (30 s,
    # not a setting yet), so allow for it
    await exact(system, scenario, timeout=90)
    await _late_image_running(scenario, late, from_edge=True)


async def _held_by_workers(system: System) -> int:
    """Mirror requests delivered to a worker and not acknowledged yet (copies in flight)."""
    client = await nats.connect(servers=system.nats_servers, connect_timeout=5)
    try:
        js = client.jetstream()
        while True:
            try:
                info = await js.consumer_info(subjects.MIRROR_STREAM, subjects.MIRROR_CONSUMER)
            except nats.js.errors.NotFoundError:
                await asyncio.sleep(0.01)
                continue
            if info.num_ack_pending:
                return int(info.num_ack_pending)
            await asyncio.sleep(0.01)
    finally:
        await client.close()


async def test_a_mirror_worker_killed_mid_copy_the_other_finishes(
        faulty: tuple[System, Scenario]) -> None:
    system, scenario = faulty
    # mirror-1 alone takes the first requests, so it is the one holding copies when it dies
    await system.stop_service("mirror-2")
    await scenario.deploy()
    held = await asyncio.wait_for(_held_by_workers(system), 30)
    await system.kill("mirror-1")
    assert held > 0
    await system.start_service("mirror-2")
    late = system.samples[3]
    await scenario.api.create(late_deployment(late))
    # what the dead worker held comes back to the other one after the ack wait
    await exact(system, scenario, timeout=90)
    await _late_image_running(scenario, late, from_edge=True)
    assert not system.services["mirror-1"].running


async def test_webhook_down_pods_start_with_the_original_image_and_are_still_mirrored(
        faulty: tuple[System, Scenario]) -> None:
    system, scenario = faulty
    await scenario.establish()
    await system.kill("webhook")
    late = system.samples[3]
    await scenario.api.create(late_deployment(late))
    pods = await _late_image_running(scenario, late, from_edge=False)
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"] == late.reference
    await exact(system, scenario, from_source={"nrf"})
    artifact = await scenario.api.get(
        "Artifact", references.artifact_name(references.parse(late.reference)))
    assert artifact is not None and artifact["status"]["phase"] == "Available"

    # back up: the next pod of that Deployment is rewritten and runs from the edge
    await system.start_service("webhook")
    for pod in pods:
        await scenario.api.delete("Pod", pod["metadata"]["name"], namespace=NF_NAMESPACE)
    await _late_image_running(scenario, late, from_edge=True)
    await exact(system, scenario)


async def test_nats_server_killed_and_restarted_on_its_store(
        faulty: tuple[System, Scenario]) -> None:
    system, scenario = faulty
    assert system.nats is not None
    await scenario.deploy()
    await system.nats.kill()
    late = system.samples[3]
    await scenario.api.create(late_deployment(late))
    await system.nats.start()
    await exact(system, scenario, timeout=90)
    await _late_image_running(scenario, late, from_edge=True)


@pytest.mark.parametrize("faulty", [True], indirect=True, ids=["nats-cluster"])
async def test_one_node_of_a_three_node_nats_cluster_lost(
        faulty: tuple[System, Scenario]) -> None:
    system, scenario = faulty
    assert system.nats_cluster is not None
    await scenario.deploy()
    leader = await system.nats_cluster.wait_for_meta_leader()
    index = system.nats_cluster.index_of(leader)
    await system.nats_cluster.kill(index)
    late = system.samples[3]
    await scenario.api.create(late_deployment(late))
    # the two survivors carry on (R3 streams keep a quorum); the end state is reached without it
    await exact(system, scenario, timeout=90)
    await _late_image_running(scenario, late, from_edge=True)
    await system.nats_cluster.restart(index)
    await exact(system, scenario, timeout=90)
