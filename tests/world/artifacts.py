"""Fixtures: the Artifact CRD (`deploy/kustomize/base/crds/artifacts.clusterregistry.io.yaml`)
installed into kubesim, from the very file the deployment applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterregistry.kinds import ARTIFACT_GROUP, ARTIFACT_PLURAL, ARTIFACT_VERSION
from kubesim.resources import Resource
from kubesim.running import Cluster

CRD_PATH = (Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base" / "crds"
            / "artifacts.clusterregistry.io.yaml")


def artifact_crd() -> dict[str, Any]:
    """The CRD as the deployment ships it."""
    loaded = yaml.safe_load(CRD_PATH.read_text())
    assert isinstance(loaded, dict)
    return loaded


async def install_artifact_crd(cluster: Cluster) -> Resource:
    """Create the CRD through the API server's write pipeline; the Artifact resource."""
    crds = cluster.api.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    await cluster.api.create(crds, artifact_crd())
    return cluster.api.lookup(ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL)


@pytest.fixture
async def artifact_crd_installed(request: pytest.FixtureRequest) -> Resource:
    """The CRD installed into whichever kubesim fixture the test uses (kube_cluster, else
    kube_api); returns kubesim's Artifact resource for direct reads."""
    name = "kube_cluster" if "kube_cluster" in request.fixturenames else "kube_api"
    cluster: Cluster = request.getfixturevalue(name)
    return await install_artifact_crd(cluster)
