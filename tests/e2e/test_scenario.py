"""The demo's scenario on the real system, asserted step by step: rewritten pods, Artifacts that
go Pending -> Mirroring -> Available, pods Running from the edge registry, the artifact store cut
off and every pod back, the network function deleted and its bytes freed by GC, and the
artifact store's own access log showing one pull per image."""

from __future__ import annotations

import pytest

from clusterregistry.sandbox import verifying
from clusterregistry.sandbox.scenarios import Scenario
from clusterregistry.sandbox.supervising import wait_for
from clusterregistry.sandbox.systems import System

pytestmark = pytest.mark.e2e


async def exact(system: System, scenario: Scenario, *, timeout: float = 60) -> None:
    last: list[str] = []

    async def clean() -> bool:
        last[:] = await verifying.problems(system, scenario.api)
        return not last

    try:
        await wait_for(clean, timeout=timeout, interval=0.5, description="the exact end state")
    except TimeoutError:
        raise AssertionError("end state not exact:\n  " + "\n  ".join(last)) from None


async def test_the_demo_scenario_step_by_step(system: System, scenario: Scenario) -> None:
    await scenario.deploy()

    line = await scenario.rewritten()
    assert system.local_registry in line

    await scenario.artifacts_available()
    for sample in system.samples:
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
