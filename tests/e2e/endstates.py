"""Waiting for the exact end state (see `clusterregistry_sandbox.verifying`), with the last list
of what was still wrong as the failure message."""

from __future__ import annotations

from typing import Any

from clusterregistry_sandbox import verifying
from clusterregistry_sandbox.scenarios import Scenario
from clusterregistry_sandbox.supervising import wait_for
from clusterregistry_sandbox.systems import System


async def exact(system: System, scenario: Scenario, *, timeout: float = 60,
                **options: Any) -> None:
    last: list[str] = []

    async def clean() -> bool:
        try:
            last[:] = await verifying.problems(system, scenario.api, **options)
        except Exception as exc:  # NATS or the API failing over: not there yet, say why
            last[:] = [f"the check itself failed: {exc!r}"]
            return False
        return not last

    try:
        await wait_for(clean, timeout=timeout, interval=0.5, description="the exact end state")
    except TimeoutError:
        raise AssertionError("end state not exact:\n  " + "\n  ".join(last)) from None
