"""The demo's scenario on the real system, asserted step by step: rewritten pods, Artifacts that
go Pending -> Mirroring -> Available, pods Running from the edge registry, the artifact store cut
off and every pod back, the network function deleted and its bytes freed by GC, and the
artifact store's own access log showing one pull per image."""

from __future__ import annotations

import pytest

from clusterregistry_sandbox.scenarios import Scenario
from clusterregistry_sandbox.systems import System
from tests.e2e.endstates import exact

pytestmark = pytest.mark.e2e


async def test_the_demo_scenario_step_by_step(system: System, scenario: Scenario) -> None:
    await scenario.deploy()

    line = await scenario.rewritten()
    assert system.local_registry in line

    await scenario.artifacts_available()
    for sample in scenario.samples:
        phases = scenario.watch.phases[scenario.artifact_name(sample)]
        assert phases[-1] == "Available"
        assert phases[0] in ("Pending", "Mirroring", "Available"), phases

    await scenario.running()
    await exact(system, scenario)
    started_once = scenario.pods_started

    await scenario.cut_off()
    assert not system.artifact_store.running
    _, old = await scenario.delete_pods()
    await scenario.running(exclude=old)
    pods = await scenario.nf_pods()
    assert not {p["metadata"]["uid"] for p in pods} & old
    await exact(system, scenario)

    await scenario.delete_network_function()
    line = await scenario.collect_garbage()
    assert scenario.numbers["bytes_freed"] > 0, line
    assert not [a for a in await scenario.api.list("Artifact")
                if a["spec"]["sourceArtifact"].startswith(system.artifact_store.host)]

    # one GET of each image's manifest on the artifact store, for every pod start and restart
    scenario.pulls()
    assert scenario.pods_started > started_once
    assert set(scenario.numbers["pulls"].values()) == {1}
