"""cmd/tracker.py and cmd/reconciler.py as a cluster runs them: settings from the
environment, probes, metrics, the whole path to an Available Artifact, a clean stop, and a
bad setting refused at start with exit code 2."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from tests.integration.tracker.worlds import LOCAL_REGISTRY, Services

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
IMAGE = "acr.example.io/nf/upf:1.2"


def _env(world: Services, port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "CLUSTERREGISTRY_NATS_SERVERS": world.nats.url,
            "CLUSTERREGISTRY_PROBEPORT": str(port),
            "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1", "CLUSTERREGISTRY_LOG_FORMAT": "json",
            "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
            "CLUSTERREGISTRY_ENABLEEARLYLOADING": "true",
            "CLUSTERREGISTRY_LOCALREGISTRY": LOCAL_REGISTRY, **extra}


async def _get(session: aiohttp.ClientSession, port: int, path: str) -> tuple[int, str]:
    try:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, await resp.text()
    except aiohttp.ClientError:
        return 0, ""


async def test_the_processes_serve_probes_reconcile_and_stop_cleanly(
        world: Services, tmp_path: Path) -> None:
    await world.start_relay()
    await world.relisted()
    tracker_port, reconciler_port = free_port(), free_port()
    tracker = Process([sys.executable, str(ROOT / "cmd" / "tracker.py"), "--identity", "t0"],
                      name="tracker", log_path=tmp_path / "tracker.log",
                      env=_env(world, tracker_port))
    reconciler = Process([sys.executable, str(ROOT / "cmd" / "reconciler.py"),
                          "--kubeconfig", str(world.cluster.kubeconfig)],
                         name="reconciler", log_path=tmp_path / "reconciler.log",
                         env=_env(world, reconciler_port))
    await tracker.start()
    await reconciler.start()
    try:
        async with aiohttp.ClientSession() as session:
            for port in (tracker_port, reconciler_port):
                await wait_for(lambda p=port: _ready(session, p), timeout=60,  # type: ignore[misc]
                               description=f"/readyz on {port}")
            await world.start_mirror()
            api = world.cluster.api
            await api.create(api.lookup("apps", "v1", "replicasets"), {
                "metadata": {"name": "upf"},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "upf"}},
                         "template": {"metadata": {"labels": {"app": "upf"}}, "spec": {
                             "containers": [{"name": "c", "image": IMAGE}]}}}},
                namespace="nf")
            await world.until(lambda: world.refs_by_source() == {IMAGE: 1} and (
                world.artifacts()[IMAGE].get("status") or {}).get("phase") == "Available",
                what="the Artifact Available through the processes")
            _, tracker_metrics = await _get(session, tracker_port, "/metrics")
            assert 'clusterregistry_tracker_kv_writes_total{operation="put"} 1.0' in (
                tracker_metrics)
            _, metrics = await _get(session, reconciler_port, "/metrics")
            assert 'clusterregistry_reconciler_artifacts{phase="Available"} 1.0' in metrics
            assert 'clusterregistry_reconciler_mirror_requests_total{reason="first"} 1.0' in (
                metrics)
        for process in (tracker, reconciler):
            await process.stop(grace=20)
            assert process.returncode == 0, process.tail_log()
        # the tracker replicas' shared durable consumer survives the stop, nothing unacked
        info = await (await world.observer()).consumer_info(
            "CLUSTERREGISTRY_KUBE", "clusterregistry-tracker")
        assert info.num_ack_pending == 0
    finally:
        for process in (tracker, reconciler):
            if process.running:
                await process.kill()


async def _ready(session: aiohttp.ClientSession, port: int) -> bool:
    status, _ = await _get(session, port, "/readyz")
    return status == 200


async def test_a_bad_setting_stops_the_start_naming_the_key(world: Services,
                                                           tmp_path: Path) -> None:
    for name, key, value in (("tracker", "CLUSTERREGISTRY_TRACKER_BATCHSIZE", "0"),
                             ("reconciler", "CLUSTERREGISTRY_RECONCILER_RETRYJITTER", "1.5")):
        process = Process([sys.executable, str(ROOT / "cmd" / f"{name}.py")], name=name,
                          log_path=tmp_path / f"{name}.log",
                          env=_env(world, free_port(), **{key: value}))
        await process.start()
        code = await asyncio.wait_for(process.wait(), 60)
        assert code == 2
        log = (tmp_path / f"{name}.log").read_text()
        assert ("tracker.batchSize" if name == "tracker" else "reconciler.retryJitter") in log
