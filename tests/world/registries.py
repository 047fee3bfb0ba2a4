"""Fixtures: a session CA, a plain HTTP registry, and a TLS + basic-auth registry.

The plain one plays the edge registry inside the cluster; the secure one
plays the remote artifact store (an ACR, a Harbor) that images are copied from.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clusterregistry_sandbox.registries import Registry
from kubesim.certificates import CertificateAuthority

SECURE_REGISTRY_USER = "clusterregistry"


@pytest.fixture(scope="session")
def ca() -> CertificateAuthority:
    """One CA for the whole session; issue per-test certificates from it."""
    return CertificateAuthority.create("clusterregistry test CA")


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    """A started plain-HTTP registry without auth (the edge registry)."""
    instance = Registry(tmp_path / "registry", name="edge-registry")
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def secure_registry(tmp_path: Path, ca: CertificateAuthority) -> AsyncIterator[Registry]:
    """A started HTTPS registry with htpasswd basic auth (the artifact store).

    Its CA is `registry.ca_path` (and `cert_dir` for skopeo), its user and
    generated password `registry.credentials`.
    """
    instance = Registry(
        tmp_path / "secure-registry",
        name="artifact-store",
        ca=ca,
        username=SECURE_REGISTRY_USER,
    )
    try:
        await instance.start()
        yield instance
    finally:
        await instance.stop()
