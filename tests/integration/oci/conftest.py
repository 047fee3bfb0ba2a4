"""Helpers for copy tests: clients for the test registries, and skopeo as the outside reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterregistry.oci import manifests
from clusterregistry.oci.authenticating import Credentials
from clusterregistry.oci.registries import RegistryClient, Retry, ssl_context
from clusterregistry_sandbox.images import find_skopeo
from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import run_command


def client_for(registry: Registry, *, actions: str = "pull", password: str | None = None,
               retry: Retry | None = None) -> RegistryClient:
    """A RegistryClient with the registry's own CA and credentials (or a wrong password)."""
    credentials = None
    if registry.credentials:
        user, secret = registry.credentials
        credentials = Credentials(user, secret if password is None else password)
    return RegistryClient(
        registry.host, credentials=credentials, plain_http=not registry.tls,
        ssl_ctx=ssl_context(ca_file=str(registry.ca_path)) if registry.tls else None,
        actions=actions, retry=retry)


async def skopeo(*args: str, registry: Registry) -> str:
    """Run skopeo against a plain-HTTP registry; AssertionError with its output on failure."""
    argv = [find_skopeo(), "--insecure-policy", *args]
    result = await run_command(argv, timeout=120)
    assert result.ok, f"skopeo {' '.join(args)} failed: {result.output}"
    return result.output


async def inspect_digest(registry: Registry, reference: str) -> str:
    """The digest skopeo computes over the raw manifest it reads by tag (index included)."""
    raw = await skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{reference}",
                       registry=registry)
    return manifests.digest_of(raw.encode())


async def inspect(registry: Registry, reference: str) -> dict[str, Any]:
    out = await skopeo("inspect", "--tls-verify=false", f"docker://{reference}",
                       registry=registry)
    result: dict[str, Any] = json.loads(out)
    return result


async def copy_to_layout(registry: Registry, reference: str, layout: Path) -> dict[str, Any]:
    """`skopeo copy --all` into an OCI layout (verifies every blob); returns its index.json."""
    await skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
                 f"docker://{reference}", f"oci:{layout}:copy", registry=registry)
    index: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return index
