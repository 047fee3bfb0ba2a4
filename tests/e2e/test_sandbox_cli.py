"""`clusterregistry sandbox up|status|down` as a user runs them: a detached sandbox that kubectl
reaches, a status table that tells the truth, `down` leaving nothing behind, and `up` after a
crashed supervisor cleaning up what it left."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from clusterregistry_sandbox.supervising import run_command
from clusterregistry_sandbox.systems import SERVICES, alive, read_state
from tests.world.kube import Kubectl

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "clusterregistry.cli", "sandbox"]


def _recorded(root: Path) -> list[tuple[str, int, float | None]]:
    state = read_state(root) or {}
    out = [(c["name"], c["pid"], c.get("started")) for c in state.get("components", [])
           if c.get("pid")]
    supervisor = state.get("supervisor") or {}
    if supervisor.get("pid"):
        out.append(("supervisor", supervisor["pid"], supervisor.get("started")))
    return out


async def test_up_status_down_and_up_after_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "sbx"
    try:
        result = await run_command([*CLI, "up", "--dir", str(root)], timeout=240)
        assert result.ok, result.output
        assert f"sandbox {root}: ready" in result.output
        state = read_state(root)
        assert state is not None and state["phase"] == "ready"
        names = {c["name"] for c in state["components"]}
        assert {"nats", "artifact-store", "edge-registry", "kubesim"} <= names
        # every landed service but the second front replica (SystemOptions.front_replicas)
        landed = [s.name for s in SERVICES if s.landed and s.name != "front-2"]
        assert landed, "no clusterregistry process has landed"
        assert "front-1" in landed
        for component in state["components"]:
            if component["name"] in landed or component["role"] != "service":
                assert component["pid"] and alive(component["pid"], component["started"]), (
                    component)
        for line in result.output.splitlines():
            if line.split()[:1] and line.split()[0] in landed:
                assert "healthy" in line.split(), line

        # kubectl reaches the sandbox's API server through the kubeconfig it wrote
        nodes = (await Kubectl(root / "kubeconfig").run("get", "nodes", "-o", "json")).json()
        assert sorted(n["metadata"]["name"] for n in nodes["items"]) == [
            "node-1", "node-2", "node-3"]

        status = await run_command([*CLI, "status", "--dir", str(root)])
        assert status.ok, status.output
        assert "kubectl" in status.output and "sample image" in status.output

        # the supervisor dies without stopping anything: `up` must clean what it left
        first = _recorded(root)
        supervisor = state["supervisor"]["pid"]
        os.kill(supervisor, signal.SIGKILL)
        for _ in range(100):
            if not alive(supervisor, state["supervisor"]["started"]):
                break
            await asyncio.sleep(0.05)
        status = await run_command([*CLI, "status", "--dir", str(root)])
        assert not status.ok and "supervisor not running" in status.output
        again = await run_command([*CLI, "up", "--dir", str(root)], timeout=240)
        assert again.ok, again.output
        assert "stopped what a previous sandbox left" in again.output
        for name, pid, started in first:
            assert not alive(pid, started), f"{name} ({pid}) survived the clean-up"

        second = _recorded(root)
        down = await run_command([*CLI, "down", "--dir", str(root)], timeout=120)
        assert down.ok, down.output
        for name, pid, started in second:
            assert not alive(pid, started), f"{name} ({pid}) survived `down`"
        assert json.loads((root / "state.json").read_text())["phase"] == "stopped"
        assert (root / "logs" / "kubesim.log").exists()
    finally:
        await run_command([*CLI, "down", "--dir", str(root)], timeout=120)


async def test_status_without_a_sandbox_says_so(tmp_path: Path) -> None:
    result = await run_command([*CLI, "status", "--dir", str(tmp_path / "none")])
    assert result.returncode == 3
    assert "no sandbox in" in result.output
