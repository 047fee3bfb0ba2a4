"""The gc process as its Deployment starts it: settings checked before anything runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from clusterregistry_sandbox.supervising import run_command

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


async def test_the_gc_process_refuses_a_bad_cadence_at_start() -> None:
    result = await run_command(
        [sys.executable, str(REPO / "cmd" / "gc.py")],
        env={**os.environ,
             "CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCCADENCE": "every night"},
        timeout=60)
    assert result.returncode == 2, result.output
    assert "clusterRegistryGCCadence" in result.output and "every night" in result.output
