"""`sandbox up --flaky-link`: the mirror and the front reach the artifact store only through the
fault proxy, as the edge names it, and the network function still comes up exact through a link
that cuts its connections and adds latency."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterregistry_sandbox.faults import Faults
from clusterregistry_sandbox.scenarios import Scenario
from clusterregistry_sandbox.supervising import run_command
from clusterregistry_sandbox.systems import read_state
from tests.e2e.conftest import SystemFactory
from tests.e2e.endstates import exact

pytestmark = pytest.mark.e2e


async def test_the_network_function_comes_up_through_a_flaky_link(
    make_system: SystemFactory,
) -> None:
    # every connection cut after 1 MiB from the store (several blobs of the samples each),
    # 20 ms each way: the copier's retries must go round it, resume or not
    system = await make_system(flaky_link=Faults(cut_after=1 << 20, latency=0.02))
    link = system.flaky_link
    assert link is not None and link.running
    assert all(s.reference.startswith(link.host + "/") for s in system.samples)
    scenario = Scenario(system)
    try:
        await scenario.deploy()
        await scenario.artifacts_available()
        await scenario.running()
        await exact(system, scenario)
        # nothing went round the link: every Artifact names the store as the edge knows it
        sources = [a["spec"]["sourceArtifact"] for a in await scenario.api.list("Artifact")]
    finally:
        await scenario.close()
    assert sources and all(s.startswith(link.host + "/") for s in sources)
    # the images came through the link (blobs the samples share come once, so not their sum)
    assert link.connections > 0 and link.bytes_down >= max(s.size for s in system.samples)


async def test_sandbox_up_takes_the_flaky_link_and_says_where_it_is(tmp_path: Path) -> None:
    root = tmp_path / "sbx"
    cli = [sys.executable, "-m", "clusterregistry.cli", "sandbox"]
    try:
        result = await run_command(
            [*cli, "up", "--dir", str(root), "--flaky-link", "cut=16Mi,seed=7,latency=5ms"],
            timeout=240)
        assert result.ok, result.output
        state = read_state(root)
        assert state is not None and state["phase"] == "ready"
        link = state["flaky_link"]
        assert link["faults"] == "cut=16777216,seed=7,latency=5ms"
        assert state["artifact_store"]["host"] == link["listen"] != link["store"]
        assert f"flaky link:     {link['listen']} -> the store at {link['store']}" in result.output
        assert all(s["reference"].startswith(link["listen"] + "/") for s in state["samples"])
    finally:
        down = await run_command([*cli, "down", "--dir", str(root)], timeout=120)
        assert down.ok, down.output
