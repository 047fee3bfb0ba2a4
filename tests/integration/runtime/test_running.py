"""`cmd/<name>.py` through the runner: with `enableClusterRegistry: false` nothing starts.

Each process says so once, naming the key, serves its probes (ready) and idles until
SIGTERM; the webhook goes on answering admission requests, allowing every pod unchanged,
so a configuration left registered with failurePolicy Fail never blocks a pod. With the
key true and a setting that cannot be, the process ends with exit code 2 and the key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clusterregistry.runtime import lifecycle
from kubesim.certificates import CertificateAuthority

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(probe_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLUSTERREGISTRY_") and k != "KUBECONFIG"}
    return {**env, "CLUSTERREGISTRY_PROBEPORT": str(probe_port),
            "CLUSTERREGISTRY_PROBEHOST": "127.0.0.1", "CLUSTERREGISTRY_LOG_FORMAT": "json",
            # nothing listens here: a service that tried to start would never be ready
            "CLUSTERREGISTRY_NATS_SERVERS": "nats://127.0.0.1:1", **extra}


@asynccontextmanager
async def _process(name: str, env: Mapping[str, str], log: Path,
                   *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "cmd" / f"{name}.py"), *args, env=dict(env),
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT,
            cwd=ROOT)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _ready(session: aiohttp.ClientSession, port: int,
                 process: asyncio.subprocess.Process, log: Path) -> None:
    async with asyncio.timeout(60):
        while True:
            assert process.returncode is None, f"exited: see {log}"
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()
            if line.startswith("{")]


async def _stop(process: asyncio.subprocess.Process) -> int:
    process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(30):
        return await process.wait()


@pytest.mark.parametrize("name", ["tracker", "relay", "reconciler", "mirror", "gc"])
async def test_a_disabled_service_says_so_serves_ready_probes_and_stops_cleanly(
        name: str, tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / f"{name}.log"
    # the command line a Deployment and the sandbox use, whatever the service takes of it
    async with (_process(name, _env(port), log, "--kubeconfig", str(tmp_path / "absent"),
                         "--identity", f"{name}-0") as process,
                aiohttp.ClientSession() as session):
        await _ready(session, port, process, log)
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            assert "process_cpu_seconds_total" in await response.text()
        assert await _stop(process) == lifecycle.EXIT_OK
    records = _records(log)
    (disabled,) = [r for r in records if r.get("disabled")]
    assert disabled["level"] == "WARNING"
    assert "enableClusterRegistry: false" in disabled["msg"]
    assert "enableClusterRegistry: true" in disabled["msg"]  # what turns it on
    # nothing started: no connection to NATS was even tried
    assert not [r for r in records if "nats" in r["msg"].lower()
                and "CLUSTERREGISTRY_NATS" not in r["msg"]], records


def _review(uid: str) -> dict[str, Any]:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "upf", "namespace": "nf"},
           "spec": {"containers": [{"name": "upf", "image": "acr.io/nf/upf:1.2"}]}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "nf", "operation": "CREATE", "userInfo": {"username": "kubelet"},
        "object": pod}}


async def _admit(ca: CertificateAuthority, tmp_path: Path, uid: str,
                 **settings: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """cmd/webhook.py with a certificate from `ca`: its answer to one pod, and its log."""
    ca.issue(common_name="clusterregistry-webhook", hosts=["127.0.0.1"]).write(tmp_path, "tls")
    port, probe_port = _free_port(), _free_port()
    env = _env(probe_port, CLUSTERREGISTRY_WEBHOOK_HOST="127.0.0.1",
               CLUSTERREGISTRY_WEBHOOK_PORT=str(port),
               CLUSTERREGISTRY_WEBHOOK_TLSCERTFILE=str(tmp_path / "tls.crt"),
               CLUSTERREGISTRY_WEBHOOK_TLSKEYFILE=str(tmp_path / "tls.key"),
               CLUSTERREGISTRY_LOCALREGISTRY="edge.local:5000", **settings)
    log = tmp_path / "webhook.log"
    context = ssl.create_default_context(cadata=ca.cert_pem.decode())
    async with (_process("webhook", env, log) as process,
                aiohttp.ClientSession() as session):
        await _ready(session, probe_port, process, log)
        async with session.post(f"https://127.0.0.1:{port}/mutate", json=_review(uid),
                                ssl=context) as response:
            assert response.status == 200
            answer = (await response.json())["response"]
        async with session.post(f"https://127.0.0.1:{port}/mutate", data=b"{}",
                                ssl=context) as response:
            assert response.status == 400  # an AdmissionReview endpoint either way
        assert await _stop(process) == lifecycle.EXIT_OK
    return answer, _records(log)


async def test_a_disabled_webhook_allows_every_pod_unchanged(
        ca: CertificateAuthority, tmp_path: Path) -> None:
    answer, records = await _admit(ca, tmp_path, "u-1")
    assert answer["uid"] == "u-1" and answer["allowed"] is True
    assert "patch" not in answer
    assert any("enableClusterRegistry: false" in w for w in answer["warnings"])
    assert [r for r in records if r.get("disabled")]


async def test_the_same_webhook_enabled_rewrites(ca: CertificateAuthority,
                                                 tmp_path: Path) -> None:
    """The control: only the key differs from the test above."""
    answer, records = await _admit(ca, tmp_path, "u-2",
                                   CLUSTERREGISTRY_ENABLECLUSTERREGISTRY="true")
    assert "patch" in answer, answer
    patch = json.loads(base64.b64decode(answer["patch"]))
    assert {"op": "replace", "path": "/spec/containers/0/image",
            "value": "edge.local:5000/acr.io/nf/upf:1.2"} in patch
    assert not [r for r in records if r.get("disabled")]


async def test_an_invalid_setting_ends_the_process_with_exit_code_2(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    env = _env(_free_port(), CLUSTERREGISTRY_ENABLECLUSTERREGISTRY="true",
               CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCTHRESHOLD="120")
    async with _process("relay", env, log) as process:
        async with asyncio.timeout(60):
            assert await process.wait() == lifecycle.EXIT_CONFIG
    (error,) = [r for r in _records(log) if r["level"] == "ERROR"]
    assert "invalid configuration" in error["msg"] and "clusterRegistryGCThreshold" in error["msg"]
