"""kube.artifacts against kubesim over HTTPS with the shipped CRD: CRUD, preconditions, the
schema rejecting bad specs, and kubectl's columns (default and `-o wide`) on Artifacts whose
status the reconciler's own code built."""

from __future__ import annotations

import random
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client

from clusterregistry.errors import ConflictError, NotFoundError, PermanentError
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.reconciler import statuses
from clusterregistry.schemas import MirrorProgress, MirrorResult, OwnerRecord
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


async def _built_by_the_reconciler(artifacts: Artifacts, source: str, *, size: int,
                                   platforms: list[str], owners: int,
                                   progress: tuple[int, int] | None = None) -> dict[str, Any]:
    """An Artifact taken through the reconciler's own decisions: created, Pending,
    Mirroring, then Available from a mirror result, each patch stored as it would be."""
    rules = statuses.Rules(local_registry="edge.local:5000")
    records = tuple(OwnerRecord(uid=f"u{i}", kind="ReplicaSet", namespace="nf",
                                name=f"rs-{i}", images=[source]) for i in range(owners))
    desired = statuses.Desired(source, records)
    now = time.time()
    artifact: dict[str, Any] | None = None
    for _ in range(3):  # create, Pending, Mirroring
        plan = statuses.plan(desired=desired, artifact=artifact, now=now, rules=rules,
                             rand=random.Random(1))
        if plan.create is not None:
            artifact = await artifacts.create(plan.create)
        else:
            assert artifact is not None and plan.status is not None
            artifact = await artifacts.patch_status(
                desired.name, plan.status,
                resource_version=artifact["metadata"]["resourceVersion"])
    assert artifact is not None and artifact["status"]["phase"] == "Mirroring"
    if progress is not None:  # the copy runs: its progress, as the reconciler writes it
        patch = statuses.on_progress(
            MirrorProgress(artifact=desired.name,
                           generation=artifact["status"]["mirrorGeneration"],
                           bytes_done=progress[0], bytes_total=progress[1], time=now),
            artifact, now=now, rules=rules)
        assert patch is not None
        return await artifacts.patch_status(
            desired.name, patch, resource_version=artifact["metadata"]["resourceVersion"])
    result = MirrorResult(
        artifact=desired.name, generation=artifact["status"]["mirrorGeneration"],
        source=source, destination=statuses.local_of(source, rules.local_registry), ok=True,
        digest="sha256:ab12cd34ef56" + "7" * 52, size=size, platforms=platforms)
    patch = statuses.on_result(result, artifact, now=now, rules=rules, rand=random.Random(1))
    assert patch is not None
    return await artifacts.patch_status(
        desired.name, patch, resource_version=artifact["metadata"]["resourceVersion"])


def _columns(table: str) -> dict[str, dict[str, str]]:
    """kubectl's table by SOURCE, each row's cells by header, cut where each header starts
    (so an empty cell stays empty rather than shifting the rest)."""
    header, *lines = table.splitlines()
    names = header.split()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    ends = [*starts[1:], None]
    rows = [{n: line[a:b].strip() for n, a, b in zip(names, starts, ends, strict=True)}
            for line in lines]
    return {row["SOURCE"]: row for row in rows}


async def test_kubectl_shows_the_columns(artifacts: Artifacts, kubectl: Kubectl) -> None:
    multi = await _built_by_the_reconciler(artifacts, SOURCE, size=987030,
                                           platforms=["linux/amd64", "linux/arm64"], owners=2)
    single = "acr.example.io/nf/smf:2.0"
    await _built_by_the_reconciler(artifacts, single, size=1288490189, platforms=[],
                                   owners=1)
    assert (multi["status"]["size"], multi["status"]["sizeHuman"]) == (987030, "964Ki")

    table = (await kubectl.run("get", "artifacts")).stdout
    print(table)
    out = table.splitlines()
    assert out[0].split() == ["NAME", "SOURCE", "PHASE", "SIZE", "REFS", "AGE"]
    rows = {line.split()[1]: line.split() for line in out[1:]}
    assert rows[SOURCE][2:5] == ["Available", "964Ki", "2"]
    assert rows[single][2:5] == ["Available", "1.2Gi", "1"]

    wide = (await kubectl.run("get", "artifacts", "-o", "wide")).stdout
    print(wide)
    columns = _columns(wide)
    assert list(columns[SOURCE]) == ["NAME", "SOURCE", "PHASE", "SIZE", "REFS", "AGE",
                                     "PROGRESS", "DIGEST", "PLATFORMS", "LAST-USED", "LOCAL"]
    row = columns[SOURCE]
    assert (row["PHASE"], row["SIZE"], row["REFS"]) == ("Available", "964Ki", "2")
    assert (row["DIGEST"], row["PLATFORMS"]) == ("sha256:ab12cd34ef56",
                                                 "linux/amd64,linux/arm64")
    assert re.fullmatch(r"\d+s", row["LAST-USED"])  # a date column: an age, seconds old
    assert row["PROGRESS"] == ""  # only while a copy runs
    assert row["LOCAL"] == f"edge.local:5000/{SOURCE}"
    # a single-platform image: the mirror names no platform, so the cell is empty (the
    # field is absent, and kubectl prints a server-side Table's null cell as nothing)
    row = columns[single]
    assert (row["SIZE"], row["DIGEST"], row["PLATFORMS"]) == (
        "1.2Gi", "sha256:ab12cd34ef56", "")
    assert re.fullmatch(r"\d+s", row["LAST-USED"])

    sources = await kubectl.run(
        "get", "artifacts", "-A", "-o",
        "jsonpath={range .items[*]}{.spec.sourceArtifact}{\"\\n\"}{end}")
    assert sorted(sources.stdout.split()) == sorted([SOURCE, single])


async def test_kubectl_shows_a_running_copy_s_progress(artifacts: Artifacts,
                                                       kubectl: Kubectl) -> None:
    """PROGRESS (`-o wide`) while Mirroring; the CRD's schema takes status.progress."""
    running = await _built_by_the_reconciler(artifacts, SOURCE, size=0, platforms=[],
                                             owners=1, progress=(120 << 20, 256 << 20))
    assert running["status"]["progress"]["bytesDone"] == 120 << 20
    assert running["status"]["progressHuman"] == "120Mi/256Mi (46%)"
    wide = (await kubectl.run("get", "artifacts", "-o", "wide")).stdout
    print(wide)
    row = _columns(wide)[SOURCE]
    assert (row["PHASE"], row["PROGRESS"], row["SIZE"]) == ("Mirroring", "120Mi/256Mi (46%)",
                                                          "")
