"""The hard delete: distribution's offline mark-and-sweep (`registry garbage-collect`).

It frees the blobs no manifest in any repository refers to any more, so it must
run while nothing writes (see `bus.fencing`). Two ways to run it:

- `SubprocessSweeper`: the registry binary on this machine, against the
  registry's own configuration (the sandbox; a GC co-located with the registry);
- `JobSweeper`: a Kubernetes Job that mounts the registry's volume and config
  and runs the same command in the registry image (a cluster, where GC's pod
  does not have the registry volume).

Never with `--delete-untagged`: in distribution 2.8 it deletes the children of
every tagged multi-arch index (distribution issue 3178), i.e. breaks live
images. Untagged manifests of collected images are deleted through the API
before the sweep instead (`selecting.manifests_to_delete`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

from clusterregistry.errors import ClusterRegistryError, PermanentError, RetryableError
from clusterregistry.kube.clients import ApiClient
from clusterregistry.kube.jobs import Jobs

log = logging.getLogger(__name__)

__all__ = ["JobSweeper", "SubprocessSweeper", "SweepResult", "Sweeper", "garbage_collect_argv",
           "parse_summary", "sweep_job"]

_SUMMARY = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible for deletion")
_FORBIDDEN = "--delete-untagged"
_PR_SET_PDEATHSIG = 1
SWEEP_JOB_LABELS = {"app.kubernetes.io/name": "clusterregistry-gc-sweep"}


@dataclass(frozen=True)
class SweepResult:
    blobs_marked: int
    blobs_deleted: int
    manifests_deleted: int
    seconds: float
    output_tail: str = ""


class Sweeper(Protocol):
    async def sweep(self, *, run: str) -> SweepResult: ...


def garbage_collect_argv(binary: str, config_path: str) -> list[str]:
    """`<binary> garbage-collect <config>`; never `--delete-untagged` (module docstring)."""
    argv = [binary, "garbage-collect", config_path]
    assert _FORBIDDEN not in argv
    return argv


def parse_summary(output: str, seconds: float) -> SweepResult:
    match = _SUMMARY.search(output)
    marked, blobs, manifests = (int(g) for g in match.groups()) if match else (0, 0, 0)
    return SweepResult(blobs_marked=marked, blobs_deleted=blobs, manifests_deleted=manifests,
                       seconds=seconds, output_tail=output[-2000:])


def find_registry_binary(configured: str = "") -> str:
    for name in ([configured] if configured else ["docker-registry", "registry"]):
        found = shutil.which(name)
        if found:
            return found
    raise PermanentError(
        f"the registry binary ({configured or 'docker-registry or registry'}) is not on PATH; "
        "set gc.registryBinary")


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when GC dies (Linux PR_SET_PDEATHSIG).

    A GC killed with SIGKILL cannot kill its sweep, and its lock expires within the
    TTL: a sweep still running then would race the mirrors' writes it no longer fences.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class SubprocessSweeper:
    """`garbage-collect` as a child process, killed (with its group) on cancellation."""

    def __init__(self, *, binary: str, config_path: str, timeout: float) -> None:
        self.binary = binary
        self.config_path = config_path
        self.timeout = timeout

    async def sweep(self, *, run: str) -> SweepResult:
        argv = garbage_collect_argv(self.binary, self.config_path)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            async with asyncio.timeout(self.timeout):
                stdout, _ = await process.communicate()
        except BaseException as exc:
            # cancelled (the fence was lost) or timed out: a sweep must not go on unfenced
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise RetryableError(f"garbage-collect took longer than {self.timeout:g}s"
                                     ) from exc
            raise
        output = stdout.decode(errors="replace")
        if process.returncode != 0:
            raise RetryableError(f"garbage-collect exited with status {process.returncode}: "
                                 f"{output[-1000:]}")
        return parse_summary(output, time.monotonic() - started)


# the uid/gid the registry Deployment runs as (deploy/kustomize/base/registry.yaml)
SWEEP_UID = 65532


def sweep_job(run: str, *, namespace: str, image: str, volume_claim: str, config_map: str,
              storage_path: str, timeout: float, node_name: str = "") -> dict[str, Any]:
    """The batch/v1 Job that sweeps the registry volume once."""
    name = f"clusterregistry-gc-sweep-{run}"[:63].rstrip("-")
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{
            "name": "sweep",
            "image": image,
            "command": garbage_collect_argv("registry", "/etc/docker/registry/config.yml"),
            "volumeMounts": [
                {"name": "storage", "mountPath": storage_path},
                {"name": "config", "mountPath": "/etc/docker/registry", "readOnly": True},
            ],
            # hardened as every clusterregistry container (restricted Pod Security)
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
        }],
        # the registry's own uid and group, so the sweep can delete what the registry wrote
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SWEEP_UID,
            "runAsGroup": SWEEP_UID,
            "fsGroup": SWEEP_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": "storage", "persistentVolumeClaim": {"claimName": volume_claim}},
            {"name": "config", "configMap": {"name": config_map}},
        ],
    }
    if node_name:
        pod_spec["nodeName"] = node_name
    labels = dict(SWEEP_JOB_LABELS)
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {**labels, "clusterregistry.io/gc-run": run}},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 3600,
                 "activeDeadlineSeconds": int(timeout),
                 "template": {"metadata": {"labels": labels}, "spec": pod_spec}},
    }


class JobSweeper:
    """`garbage-collect` in a Kubernetes Job on the registry's volume and configuration.

    The Job's pod mounts the registry PVC (ReadWriteOnce volumes need the same
    node as the registry pod: `node_name` pins it there) and the registry's
    ConfigMap, runs the command once (backoffLimit 0: a failed sweep is retried
    by the next GC run, under a new lock, not by Kubernetes outside of one), and
    is deleted afterwards with its pod.
    """

    def __init__(self, api: ApiClient, *, namespace: str, image: str, volume_claim: str,
                 config_map: str, storage_path: str, timeout: float, node_name: str = "",
                 poll_interval: float = 1.0) -> None:
        self.jobs = Jobs(api, namespace)
        self.namespace = namespace
        self.image = image
        self.volume_claim = volume_claim
        self.config_map = config_map
        self.storage_path = storage_path
        self.timeout = timeout
        self.node_name = node_name
        self.poll_interval = poll_interval

    def job(self, run: str) -> dict[str, Any]:
        return sweep_job(run, namespace=self.namespace, image=self.image,
                         volume_claim=self.volume_claim, config_map=self.config_map,
                         storage_path=self.storage_path, timeout=self.timeout,
                         node_name=self.node_name)

    async def cleanup(self) -> int:
        """Delete sweep Jobs a previous GC left running (it was killed before its `finally`):
        a sweep must not outlive the lock it was started under. Returns how many."""
        try:
            names = await self.jobs.names(SWEEP_JOB_LABELS)
            for name in names:
                log.warning("deleting sweep Job %s left by a previous GC", name)
                await self.jobs.delete(name)
        except ClusterRegistryError as exc:
            raise RetryableError(f"cannot clean up sweep Jobs: {exc}") from exc
        return len(names)

    async def sweep(self, *, run: str) -> SweepResult:
        body = self.job(run)
        name = body["metadata"]["name"]
        started = time.monotonic()
        try:
            await self.jobs.create(body)
        except ClusterRegistryError as exc:
            raise RetryableError(f"cannot create sweep Job {name}: {exc}") from exc
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    conditions = await self.jobs.conditions(name)
                    if conditions.get("Complete") == "True":
                        return SweepResult(blobs_marked=0, blobs_deleted=0,
                                           manifests_deleted=0,
                                           seconds=time.monotonic() - started,
                                           output_tail=f"job {name} complete")
                    if conditions.get("Failed") == "True":
                        raise RetryableError(f"sweep Job {name} failed")
                    await asyncio.sleep(self.poll_interval)
        except TimeoutError as exc:
            raise RetryableError(f"sweep Job {name} did not finish within {self.timeout:g}s"
                                 ) from exc
        finally:
            # Foreground propagation deletes its pod first; a cancelled GC must not leave a
            # sweep running unfenced
            with contextlib.suppress(ClusterRegistryError):
                await self.jobs.delete(name)
