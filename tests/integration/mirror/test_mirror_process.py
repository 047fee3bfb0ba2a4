"""The mirror as a cluster runs it: cmd/mirror.py with a settings file, probes, metrics, a
copy through the work queue, a graceful stop, and no password in its log."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from clusterregistry_sandbox.natsservers import NatsCluster
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from tests.integration.mirror.conftest import MirrorWorld
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def mirror_process(tmp_path: Path, settings: dict[str, object], *, nats: str, probe_port: int,
                   **env_extra: str) -> Process:
    """cmd/mirror.py as its pod runs it: a settings file, NATS and the probes from the
    environment, JSON logs in tmp_path/mirror.log, no Kubernetes configuration."""
    (tmp_path / "settings.yaml").write_text(yaml.safe_dump(settings))
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env.update({"CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
                "CLUSTERREGISTRY_NATS_SERVERS": nats,
                "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
                "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1", "CLUSTERREGISTRY_LOG_FORMAT": "json",
                "POD_NAME": "mirror-0", **env_extra})
    return Process([sys.executable, str(ROOT / "cmd" / "mirror.py"),
                    "--config", str(tmp_path / "settings.yaml")],
                   name="mirror", log_path=tmp_path / "mirror.log", env=env)


async def test_cmd_mirror_copies_serves_metrics_and_stops_cleanly(
    mirror_world: MirrorWorld, secure_registry: Registry, registry: Registry,
    build_image: BuildImage, push_image: PushImage, tmp_path: Path,
) -> None:
    image = build_image("nf/upf", layer_sizes=(100_000,))
    await push_image(image, secure_registry, "nf/upf")
    user, password = secure_registry.credentials or ("", "")
    (tmp_path / "password").write_text(password + "\n")
    settings = {"localRegistry": registry.host, "mirror": {"registries": [{
        "host": secure_registry.host, "caFile": str(secure_registry.ca_path),
        "username": user, "passwordFile": str(tmp_path / "password")}]}}
    port = free_port()
    process = mirror_process(tmp_path, settings, nats=mirror_world.nats.url, probe_port=port)
    await process.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=60, description="mirror /readyz")
            await mirror_world.request("upf", f"{secure_registry.host}/nf/upf:latest",
                                       f"{registry.host}/mirror/nf/upf:latest")
            [result] = await mirror_world.wait_results(1)
            assert result.ok and result.worker == "mirror-0" and result.digest == image.digest
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
        assert 'clusterregistry_mirror_requests_total{outcome="ok"} 1.0' in text
        assert 'clusterregistry_mirror_blobs_total{how="copied"} 2.0' in text
        assert f"clusterregistry_mirror_copied_bytes_total {float(result.bytes_copied)}" in text
        assert "clusterregistry_mirror_copies_in_flight 0.0" in text
        await process.stop(grace=20)
        assert process.returncode == 0
        log = (tmp_path / "mirror.log").read_text()
        assert "mirrored" in log and password not in log
    finally:
        if process.running:
            await process.kill()


async def test_cmd_mirror_waits_for_a_jetstream_quorum_then_serves(tmp_path: Path) -> None:
    """One node of three up: JetStream has no meta leader and answers nothing, so the
    mirror's buckets cannot be made. The process must keep trying, not ready, and serve
    once the other nodes arrive (what a cluster whose NATS pods start late looks like)."""
    cluster = NatsCluster(tmp_path / "nats", size=3)
    first, *others = cluster.nodes
    await first.spawn()
    port = free_port()
    process = mirror_process(tmp_path, {"localRegistry": "127.0.0.1:5000"},
                             nats=",".join(cluster.servers), probe_port=port,
                             CLUSTERREGISTRY_NATS_STREAMREPLICAS="3")
    await process.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def readiness() -> int | None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status
                except aiohttp.ClientError:
                    return None

            async def retried() -> bool:
                log = tmp_path / "mirror.log"
                return log.exists() and log.read_text().count(
                    "mirror cannot prepare NATS yet") >= 2

            await wait_for(retried, timeout=90, description="two failed tries to prepare NATS")
            assert process.running and await readiness() == 503
            for node in others:
                await node.spawn()
            await cluster.wait_for_meta_leader(timeout=60)

            async def ready() -> bool:
                return await readiness() == 200

            await wait_for(ready, timeout=90, description="mirror /readyz once NATS has quorum")
        await process.stop(grace=20)
        assert process.returncode == 0
    finally:
        if process.running:
            await process.kill()
        await cluster.stop()
