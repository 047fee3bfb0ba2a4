"""Fixtures for kubesim: an in-process simulated cluster and the outside clients that use it.

The cluster runs in the test's event loop (fast, and a test can reach its
ApiServer directly), but is used over HTTPS by clients nobody here wrote:
kubectl from the venv (never /usr/bin/kubectl, which may be another
version) and kubernetes-asyncio.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubesim.controllers import KubeletSettings
from kubesim.running import Cluster, ClusterSettings

KUBECTL = str(Path(sys.executable).parent / "kubectl")


@dataclass
class KubectlResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Kubectl:
    """Runs the venv's kubectl against one kubeconfig, without blocking the event loop."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def argv(self, *args: str) -> list[str]:
        return [KUBECTL, "--kubeconfig", str(self.kubeconfig), *args]

    async def run(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> KubectlResult:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.kubeconfig.parent),
        }
        proc = await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdin=asyncio.subprocess.PIPE if stdin is not None else None,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), timeout
            )
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        result = KubectlResult(proc.returncode or 0, out.decode(), err.decode())
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        """A long-running kubectl (e.g. `get -w`); the caller stops it."""
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.kubeconfig.parent),
        }
        return await asyncio.create_subprocess_exec(
            *self.argv(*args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )


async def _cluster(tmp_path: Path, settings: ClusterSettings) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path / "kubesim", settings)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[Cluster]:
    """kubesim serving the API only (no controllers): for API conformance tests."""
    async for cluster in _cluster(tmp_path, ClusterSettings(controllers=False)):
        yield cluster


def fast_kubelet(**settings: Any) -> KubeletSettings:
    """KubeletSettings whose image pull back-off is 0.2 s doubling to 1 s.

    Speed-up, named: a real kubelet waits 10 s doubling to 300 s per pod and image,
    which kubesim, the sandbox and `make demo` keep. A test whose pods are meant to fail
    a pull first (an image pushed later, a secret created later, a registry coming
    back) would wait tens of seconds for nothing it is about. The back-off's own timing
    is tested with an injected clock (tests/integration/kubesim/test_kubelet.py).
    """
    return KubeletSettings(backoff_initial=0.2, backoff_max=1.0, **settings)


@pytest.fixture
async def kube_cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    """kubesim with its controllers, scheduler and kubelet; fast image pull back-off."""
    settings = ClusterSettings(kubelet=fast_kubelet())
    async for cluster in _cluster(tmp_path, settings):
        yield cluster


@pytest.fixture
def kubectl(request: pytest.FixtureRequest) -> Kubectl:
    """kubectl bound to whichever kubesim fixture the test uses."""
    for name in ("kube_cluster", "kube_api"):
        if name in request.fixturenames:
            cluster: Cluster = request.getfixturevalue(name)
            return Kubectl(cluster.kubeconfig)
    cluster = request.getfixturevalue("kube_api")
    return Kubectl(cluster.kubeconfig)
