"""End-to-end fixtures: the whole sandbox (every landed process, real NATS, registries, kubesim
as a process) per test, always stopped, with every log tail attached when a test fails."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from clusterregistry_sandbox.scenarios import Scenario
from clusterregistry_sandbox.systems import System, SystemOptions

pytestmark = pytest.mark.e2e

SystemFactory = Callable[..., Awaitable[System]]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _log_tails(system: System, lines: int = 25) -> str:
    out = []
    for log in sorted(system.logs.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"----- {log.name} -----\n" + "\n".join(text))
    return "\n".join(out)


@pytest.fixture
async def make_system(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[
    SystemFactory
]:
    """Start a sandbox with the given SystemOptions fields; every one is stopped afterwards."""
    systems: list[System] = []

    async def make(**options: Any) -> System:
        system = System(tmp_path / f"sandbox-{len(systems)}", SystemOptions(**options))
        systems.append(system)
        await system.start()
        return system

    try:
        yield make
    finally:
        failed = getattr(request.node, "rep_call", None)
        for system in systems:
            if failed is not None and failed.failed:
                print(f"\n===== logs of {system.root} =====\n{_log_tails(system)}")
            await system.stop()


@pytest.fixture
async def system(make_system: SystemFactory) -> System:
    """The default sandbox: one nats-server, three nodes, every landed process."""
    return await make_system()


@pytest.fixture
async def scenario(system: System) -> AsyncIterator[Scenario]:
    scenario = Scenario(system)
    try:
        yield scenario
    finally:
        await scenario.close()
