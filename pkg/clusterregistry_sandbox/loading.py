"""A load on the sandbox: many Deployments over many images created at once, measured.

The mission's numbers only mean something at scale: with hundreds of pods
starting at once, every pod must come up from the edge registry and every
image must be copied once, so the artifact store sees one pull per image
rather than one per pod. `run_load` creates the load in its own namespace
(images pushed to the artifact store first, outside the clock), waits until
every pod runs, and reports timings and the artifact store's pull counts.
The same function, on a sandbox without clusterregistry's processes, is the
baseline: the pods then pull straight from the artifact store.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

from clusterregistry import references
from clusterregistry_sandbox.apiclients import ApiClient
from clusterregistry_sandbox.images import ImageFormat
from clusterregistry_sandbox.samples import PushedSample, Sample, fill
from clusterregistry_sandbox.scenarios import count_manifest_pulls
from clusterregistry_sandbox.supervising import wait_for
from clusterregistry_sandbox.systems import System

__all__ = ["LoadResult", "load_samples", "run_load"]

LOAD_NAMESPACE = "load"


@dataclass
class LoadResult:
    deployments: int
    pods: int
    images: int
    seconds_to_running: float
    seconds_to_available: float | None
    pulls_per_image: dict[str, int] = field(default_factory=dict)
    pods_from_edge: int = 0
    artifacts_available: int = 0

    def as_dict(self) -> dict[str, Any]:
        pulls = sorted(self.pulls_per_image.values())
        return {
            "deployments": self.deployments, "pods": self.pods, "images": self.images,
            "seconds_to_running": round(self.seconds_to_running, 2),
            "seconds_to_available": (round(self.seconds_to_available, 2)
                                     if self.seconds_to_available is not None else None),
            "artifact_store_pulls": sum(pulls),
            "pulls_per_image_min": pulls[0] if pulls else 0,
            "pulls_per_image_max": pulls[-1] if pulls else 0,
            "pods_from_edge": self.pods_from_edge,
            "artifacts_available": self.artifacts_available,
        }


def load_samples(count: int) -> list[Sample]:
    return [
        Sample(repository=f"load/app-{index:03d}", tag="1.0.0",
               image_format=ImageFormat.OCI if index % 2 else ImageFormat.DOCKER,
               platforms=("linux/amd64",), layer_sizes=(8 * 1024,),
               description="load image")
        for index in range(count)
    ]


def _deployment(index: int, image: str, replicas: int, *, pull_secrets: bool = True) -> dict[
    str, Any
]:
    name = f"app-{index:03d}"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": LOAD_NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": image,
                                    "imagePullPolicy": "Always"}],
                    "imagePullSecrets": [{"name": "artifact-store"}] if pull_secrets else [],
                },
            },
        },
    }


async def push_load_images(system: System, count: int) -> list[PushedSample]:
    """Build and push `count` small distinct images, at most eight skopeo processes at once."""
    samples = load_samples(count)
    pushed: list[PushedSample] = []
    for start in range(0, count, 8):
        pushed += await fill(system.artifact_store, system.root / "load-images",
                             samples=samples[start:start + 8], seed=1000 + start,
                             reference_host=system.store_host)
    return pushed


async def run_load(system: System, *, deployments: int, replicas: int, images: int,
                   timeout: float = 600.0, expect_edge: bool = True) -> LoadResult:
    """Create `deployments` x `replicas` pods over `images` images at once; wait; measure."""
    pushed = await push_load_images(system, images)
    log = system.artifact_store.log_path
    offset = log.stat().st_size if log.exists() else 0
    async with ApiClient(system.kubeconfig) as api:
        store = system.artifact_store
        assert store.credentials is not None
        user, password = store.credentials
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        config = {"auths": {system.store_host: {"username": user, "password": password,
                                                "auth": auth}}}
        await api.apply({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": LOAD_NAMESPACE}})
        await api.apply({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "artifact-store", "namespace": LOAD_NAMESPACE},
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
        })
        began = time.monotonic()
        semaphore = asyncio.Semaphore(16)

        # pods name the store's pull secret, as a network function's pods do; the mirror
        # still reads through the front, which has the same credentials configured
        pull_secrets = True

        async def create(index: int) -> None:
            async with semaphore:
                await api.create(_deployment(index, pushed[index % images].reference, replicas,
                                             pull_secrets=pull_secrets))

        await asyncio.gather(*(create(i) for i in range(deployments)))
        total = deployments * replicas
        available_at: list[float] = []
        names = {references.artifact_name(references.parse(p.reference)) for p in pushed}

        async def artifacts() -> bool:
            if not expect_edge:
                return True
            items = await api.list("Artifact")
            ready = [a for a in items if a["metadata"]["name"] in names
                     and (a.get("status") or {}).get("phase") == "Available"]
            if len(ready) == len(names) and not available_at:
                available_at.append(time.monotonic() - began)
            return len(ready) == len(names)

        async def running() -> list[dict[str, Any]] | None:
            await artifacts()
            pods = await api.list("Pod", namespace=LOAD_NAMESPACE)
            up = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            return up if len(up) == total else None

        pods = await wait_for(running, timeout=timeout, interval=0.5,
                              description=f"{total} load pods Running")
        seconds = time.monotonic() - began
        await wait_for(artifacts, timeout=timeout, interval=0.5,
                       description="every load Artifact Available")
        ready = [a for a in await api.list("Artifact") if a["metadata"]["name"] in names
                 and (a.get("status") or {}).get("phase") == "Available"]
    edge = system.local_registry + "/"
    from_edge = sum(
        1 for p in pods
        if all(cs.get("imageID", "").startswith(edge)
               for cs in p["status"].get("containerStatuses") or [{}]))
    with log.open("rb") as handle:
        handle.seek(offset)
        counts = count_manifest_pulls(handle.read().decode(errors="replace"))
    pulls = {
        p.reference: counts.get(f"{p.sample.repository}:{p.sample.tag}", 0)
        + counts.get(f"{p.sample.repository}:{p.digest}", 0)
        for p in pushed
    }
    return LoadResult(
        deployments=deployments, pods=total, images=images, seconds_to_running=seconds,
        seconds_to_available=available_at[0] if available_at else None,
        pulls_per_image=pulls, pods_from_edge=from_edge, artifacts_available=len(ready))
