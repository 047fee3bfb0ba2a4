"""The relay as a cluster runs it: cmd/relay.py, settings from the environment, probes,
metrics, and a graceful stop that hands the Lease over."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import aiohttp
import pytest

from clusterregistry import subjects
from clusterregistry_sandbox.supervising import Process, free_port, wait_for
from tests.integration.relay.conftest import World

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


async def test_cmd_relay_serves_probes_relays_and_stops_cleanly(world: World,
                                                                tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ,
           "CLUSTERREGISTRY_ENABLECLUSTERREGISTRY": "true",
           "CLUSTERREGISTRY_NATS_SERVERS": world.nats.url,
           "CLUSTERREGISTRY_PROBEPORT": str(port),
           "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1",
           "CLUSTERREGISTRY_LOG_FORMAT": "json",
           "POD_NAME": "relay-0"}
    process = Process([sys.executable, str(ROOT / "cmd" / "relay.py"),
                       "--kubeconfig", str(world.cluster.kubeconfig)],
                      name="relay", log_path=tmp_path / "relay.log", env=env)
    await process.start()
    try:
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=60, description="relay /readyz")
            await world.relisted("pod")
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            assert "clusterregistry_relay_leader 1.0" in text
            assert 'clusterregistry_relay_relists_total{kind="pod"} 1.0' in text
        await process.stop(grace=20)
        assert process.returncode == 0
        lease = world.cluster.api.get(world.cluster.api.lookup("coordination.k8s.io", "v1",
                                                               "leases"),
                                      namespace="clusterregistry", name=subjects.RELAY_LEASE)
        assert lease["spec"]["holderIdentity"] == ""  # released for a standby to take at once
        log = (tmp_path / "relay.log").read_text()
        assert '"level": "INFO"' in log or '"level":"INFO"' in log
    finally:
        if process.running:
            await process.kill()
