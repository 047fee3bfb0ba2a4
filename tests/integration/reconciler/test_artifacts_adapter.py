"""kube.artifacts against kubesim over HTTPS with the shipped CRD: CRUD, preconditions, the
schema rejecting bad specs, and kubectl's columns."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client

from clusterregistry.errors import ConflictError, NotFoundError, PermanentError
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from kubesim.resources import Resource
from kubesim.running import Cluster
from tests.world.kube import Kubectl

pytestmark = pytest.mark.integration

SOURCE = "acr.example.io/nf/upf:1.2"


def _body(name: str = "upf", source: str = SOURCE) -> dict[str, object]:
    return {"metadata": {"name": name},
            "spec": {"sourceArtifact": source, "localArtifact": f"edge.local:5000/{source}"}}


@pytest.fixture
async def artifacts(kube_api: Cluster, artifact_crd_installed: Resource
                    ) -> AsyncIterator[Artifacts]:
    api: client.ApiClient = await api_client(str(kube_api.kubeconfig))
    try:
        yield Artifacts(api)
    finally:
        await api.close()


async def test_create_get_list_patch_delete(artifacts: Artifacts) -> None:
    assert await artifacts.get("upf") is None
    created = await artifacts.create(_body())
    assert created["spec"]["sourceArtifact"] == SOURCE
    with pytest.raises(ConflictError):
        await artifacts.create(_body())
    got = await artifacts.get("upf")
    assert got is not None and got["metadata"]["uid"] == created["metadata"]["uid"]
    assert [a["metadata"]["name"] for a in await artifacts.list()] == ["upf"]

    rv = created["metadata"]["resourceVersion"]
    patched = await artifacts.patch_status("upf", {"phase": "Pending"}, resource_version=rv)
    assert patched["status"] == {"phase": "Pending"}
    # a write based on what was read before that patch loses, and changes nothing
    with pytest.raises(ConflictError):
        await artifacts.patch_status("upf", {"phase": "Available"}, resource_version=rv)
    with pytest.raises(ConflictError):
        await artifacts.delete("upf", resource_version=rv)
    current = await artifacts.get("upf")
    assert current is not None and current["status"]["phase"] == "Pending"
    # the status subresource ignores spec; unconditional merge patches apply
    await artifacts.patch_status("upf", {"digest": "sha256:" + "a" * 64})
    current = await artifacts.get("upf")
    assert current is not None and current["status"] == {
        "phase": "Pending", "digest": "sha256:" + "a" * 64}

    assert await artifacts.delete(
        "upf", resource_version=current["metadata"]["resourceVersion"]) is True
    assert await artifacts.get("upf") is None
    assert await artifacts.delete("upf") is False
    with pytest.raises(NotFoundError):
        await artifacts.patch_status("upf", {"phase": "Available"})


async def test_the_schema_rejects_bad_specs_and_statuses(artifacts: Artifacts) -> None:
    with pytest.raises(PermanentError, match="sourceArtifact"):
        await artifacts.create({"metadata": {"name": "bad"}, "spec": {
            "sourceArtifact": "not a reference!", "localArtifact": "edge.local:5000/x:1"}})
    with pytest.raises(PermanentError, match="localArtifact"):
        await artifacts.create({"metadata": {"name": "bad"},
                                "spec": {"sourceArtifact": SOURCE}})
    await artifacts.create(_body())
    with pytest.raises(PermanentError, match="phase"):
        await artifacts.patch_status("upf", {"phase": "Lost"})
    with pytest.raises(PermanentError, match="size"):
        await artifacts.patch_status("upf", {"size": -1})
    assert await artifacts.list() != []  # and the bad ones were never stored
    assert [a["metadata"]["name"] for a in await artifacts.list()] == ["upf"]


async def test_kubectl_shows_the_columns(artifacts: Artifacts, kubectl: Kubectl) -> None:
    await artifacts.create(_body())
    await artifacts.patch_status("upf", {"phase": "Available", "size": 1234,
                                         "references": {"count": 2, "owners": []}})
    out = (await kubectl.run("get", "artifacts")).stdout.splitlines()
    assert out[0].split() == ["NAME", "SOURCE", "PHASE", "SIZE", "REFS", "AGE"]
    assert out[1].split()[:5] == ["upf", SOURCE, "Available", "1234", "2"]
    sources = await kubectl.run(
        "get", "artifacts", "-A", "-o", "jsonpath={range .items[*]}{.spec.sourceArtifact}{end}")
    assert sources.stdout == SOURCE
