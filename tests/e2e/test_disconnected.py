"""Disconnected mode, the mission itself: with the artifact store stopped, existing workloads
restart, reschedule off a removed node, and scale up, and a node that never held the images
joins and pulls every layer, every pod from the edge registry."""

from __future__ import annotations

import pytest

from clusterregistry_sandbox.scenarios import NF_NAMESPACE, Scenario
from clusterregistry_sandbox.systems import System
from tests.e2e.endstates import exact

pytestmark = pytest.mark.e2e


async def test_restarts_rescheduling_and_scale_up_without_the_artifact_store(
        system: System, scenario: Scenario) -> None:
    await scenario.establish()
    await scenario.cut_off()

    # restarts: every pod deleted comes back
    _, old = await scenario.delete_pods()
    await scenario.running(exclude=old)

    # rescheduling: a node goes, its Deployment pods land on the others
    pods = await scenario.nf_pods()
    on_node3 = [p for p in pods if p["spec"].get("nodeName") == "node-3"
                and p["metadata"]["labels"]["app"] == "upf"]
    assert await scenario.api.delete("Node", "node-3")
    await scenario.running(exclude={p["metadata"]["uid"] for p in on_node3})
    pods = await scenario.nf_pods()
    assert "node-3" not in {p["spec"].get("nodeName") for p in pods}
    assert len([p for p in pods if p["metadata"]["labels"]["app"] == "smf"]) == 2

    # scale-up: three more replicas of an image the artifact store can no longer serve
    await scenario.api.patch("Deployment", "upf", {"spec": {"replicas": 5}},
                             namespace=NF_NAMESPACE)
    await scenario.running()
    pods = await scenario.nf_pods()
    assert len([p for p in pods if p["metadata"]["labels"]["app"] == "upf"]) == 5
    await exact(system, scenario)
    assert not system.artifact_store.running

    # a new node, which never held any image, pulls every layer from the edge registry
    line = await scenario.new_node("node-4")
    assert "pulled all" in line, line
    await exact(system, scenario)
