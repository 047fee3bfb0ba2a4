"""Fixtures for kubesim: an in-process simulated cluster and the outside clients that use it.

The cluster runs in the test's event loop (fast, and a test can reach its
ApiServer directly), but is used over HTTPS by clients nobody here wrote:
kubectl from the venv (never /usr/bin/kubectl, which may be another
version) and kubernetes-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubesim.apiserver import ApiServer
from kubesim.controllers import KubeletSettings
from kubesim.resources import Resource
from kubesim.running import Cluster, ClusterSettings

T = TypeVar("T")

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


async def running_cluster(tmp_path: Path, settings: ClusterSettings) -> AsyncIterator[Cluster]:
    """A started kubesim Cluster under tmp_path, stopped afterwards (`async for` in a fixture)."""
    cluster = Cluster(tmp_path / "kubesim", settings)
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[Cluster]:
    """kubesim serving the API only (no controllers): for API conformance tests."""
    async for cluster in running_cluster(tmp_path, ClusterSettings(controllers=False)):
        yield cluster


class ApiChanges:
    """An in-process ApiServer whose waits re-check their condition after every committed
    change (and at least every 0.1 s), so tests wait on state, never on a fixed sleep."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.changed = asyncio.Event()
        api.subscribe(self._on_change)

    def _on_change(self, event: str, resource: Resource, obj: dict[str, Any]) -> None:
        self.changed.set()

    async def wait_for(self, predicate: Callable[[], T | None], *, timeout: float = 10.0,
                       what: str = "condition") -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self.changed.clear()
            value = predicate()
            if value:
                return value
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.1))


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
    async for cluster in running_cluster(tmp_path, settings):
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
