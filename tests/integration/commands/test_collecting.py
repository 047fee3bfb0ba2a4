"""`clusterregistry gc run-once` as a user runs it: over NATS to a running GC process, and in
process; the GC's metrics on its probe port."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from clusterregistry import config
from clusterregistry.gc.serving import serve
from clusterregistry_sandbox.supervising import free_port, run_command, wait_for
from tests.integration.gc.conftest import GcWorld

pytestmark = pytest.mark.integration


def _env(world: GcWorld, probe_port: int) -> dict[str, str]:
    return {
        "CLUSTERREGISTRY_NATS_SERVERS": world.nats.url,
        "CLUSTERREGISTRY_LOCALREGISTRY": world.registry.host,
        "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
        "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1",
        "CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCCADENCE": "",
        "CLUSTERREGISTRY_GC_GRACEPERIODSECONDS": "0",
        "CLUSTERREGISTRY_GC_LOCKTTLSECONDS": "2",
        "CLUSTERREGISTRY_GC_REGISTRYCONFIGPATH": str(world.registry.config_path),
        "CLUSTERREGISTRY_GC_STORAGEPATH": str(world.registry.root_dir),
        "CLUSTERREGISTRY_GC_USAGESOURCE": "blobs",
    }


async def _cli(env: dict[str, str], *args: str) -> tuple[int, dict[str, object], str]:
    result = await run_command(
        [sys.executable, "-m", "clusterregistry.cli", "gc", "run-once", *args],
        env={**os.environ, "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": "", **env},
        timeout=120)
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    return result.returncode, json.loads(lines[-1]) if lines else {}, result.output


async def test_run_once_over_nats_and_in_process(gc_world: GcWorld,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    world = gc_world
    live = await world.add("src.example.io/app/live:1")
    dead = await world.add("src.example.io/app/dead:1", referenced=False)
    probe_port = free_port()
    env = _env(world, probe_port)
    for key in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(key, raising=False)
    settings = config.load(env=env)
    stop = asyncio.Event()
    metrics = CollectorRegistry()
    serving = asyncio.create_task(serve(settings, stop, probe_host="127.0.0.1",
                                        metrics_registry=metrics))
    try:
        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as session, session.get(
                        f"http://127.0.0.1:{probe_port}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=30, description="gc ready")
        code, event, output = await _cli(env, "--dry-run")
        assert code == 0, output
        assert event["event"] == "finished" and event["dryRun"] is True
        assert event["deleted"] == 1 and dead.name in str(event["message"])
        assert await world.pullable(dead)

        code, event, output = await _cli(env)
        assert code == 0, output
        assert event["event"] == "finished" and event["deleted"] == 1
        assert not await world.pullable(dead) and await world.pullable(live)
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{probe_port}/metrics") as response:
            text = await response.text()
        assert 'clusterregistry_gc_runs_total{dry_run="false",outcome="finished"} 1.0' in text
        assert "clusterregistry_gc_artifacts_deleted_total 1.0" in text
        assert "clusterregistry_gc_read_only_seconds_count 1.0" in text
    finally:
        stop.set()
        await asyncio.wait_for(serving, 30)

    # with no GC running, the same command in process
    again = await world.add("src.example.io/app/dead2:1", referenced=False)
    code, event, output = await _cli(env, "--in-process")
    assert code == 0, output
    assert event["event"] == "finished" and event["deleted"] == 1
    assert not await world.pullable(again)
    # and asking a GC that is not there fails clearly
    code, _, output = await _cli(env, "--timeout", "1")
    assert code == 1 and "is the gc process running?" in output


async def test_bad_settings_fail_with_the_key() -> None:
    code, _, output = await _cli({"CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCTHRESHOLD":
                                  "150"})
    assert code == 2 and "clusterRegistryGCThreshold" in output

