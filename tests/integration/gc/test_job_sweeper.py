"""The sweep Job's lifecycle against kubesim with controllers: created with the registry's
volume and config, waited for until Complete, deleted afterwards, given up on after its
timeout, and cleaned up when a dead GC left one behind. kubesim's kubelet pulls the Job's
image for real but only simulates running it, so the sweep itself is not executed here (the
subprocess sweeper's tests run it for real)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from clusterregistry.errors import RetryableError
from clusterregistry.gc.sweeping import JobSweeper
from clusterregistry.kube.clients import api_client
from clusterregistry_sandbox.images import ImageBuilder
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import wait_for
from kubesim.running import Cluster, ClusterSettings
from tests.world.images import PushImage
from tests.world.kube import fast_kubelet

pytestmark = pytest.mark.integration

NAMESPACE = "clusterregistry"


@pytest.fixture
async def cluster(tmp_path: Path, registry: Registry) -> AsyncIterator[Cluster]:
    """kubesim with controllers whose kubelets pull from the plain-HTTP test registry."""
    settings = ClusterSettings(kubelet=fast_kubelet(
        insecure_registries=[registry.host]))
    instance = Cluster(tmp_path / "kubesim", settings)
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()


async def test_the_sweep_job_completes_times_out_and_is_always_deleted(
    cluster: Cluster, registry: Registry, image_builder: ImageBuilder, push_image: PushImage,
) -> None:
    image = await push_image(image_builder.build("registry"), registry, "library/registry",
                             "2")
    api = await api_client(str(cluster.kubeconfig))
    try:
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        namespace: Any = {"metadata": {"name": NAMESPACE}}  # plain dicts: sent as they are
        await core.create_namespace(namespace)

        def sweeper(image: str, timeout: float) -> JobSweeper:
            return JobSweeper(api, namespace=NAMESPACE, image=image,
                              volume_claim="clusterregistry-storage",
                              config_map="clusterregistry-registry-config",
                              storage_path="/var/lib/registry", timeout=timeout,
                              poll_interval=0.1)

        async def no_jobs() -> bool:
            return not (await batch.list_namespaced_job(NAMESPACE)).items

        result = await sweeper(image, 30).sweep(run="r1")
        assert "complete" in result.output_tail
        await wait_for(no_jobs, timeout=30, description="the finished Job deleted")

        # an image nobody can pull: the pod never runs, the Job never completes
        missing = f"{registry.host}/library/registry:missing"
        # (its activeDeadlineSeconds and our own timeout are the same 2 s: either ends it)
        with pytest.raises(RetryableError, match=r"failed|did not finish within 2s"):
            await sweeper(missing, 2).sweep(run="r2")
        await wait_for(no_jobs, timeout=30, description="the timed-out Job deleted")

        # a Job left behind by a GC killed mid-sweep is deleted by the next GC at start
        left_over: Any = sweeper(missing, 60).job("r3")
        await batch.create_namespaced_job(NAMESPACE, left_over)
        assert await sweeper(image, 30).cleanup() == 1
        await wait_for(no_jobs, timeout=30, description="the left-over Job deleted")
    finally:
        await api.close()
