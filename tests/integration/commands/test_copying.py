"""`clusterregistry copy` as a user runs it: a process, plain progress lines in a pipe, a bar
when asked, the digest on stdout, and a clear failure without the password."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import run_command
from tests.integration.oci.conftest import inspect_digest
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "clusterregistry")


async def test_copy_command_with_plain_lines_and_a_bar(
    secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    image = build_image("nf/upf", tag="1.2", platforms=("linux/amd64", "linux/arm64"))
    await push_image(image, secure_registry, "nf/upf")
    user, password = secure_registry.credentials or ("", "")
    base = [CLI, "copy", f"{secure_registry.host}/nf/upf:1.2",
            "--src-creds", f"{user}:{password}", "--src-ca", str(secure_registry.ca_path),
            "--dest-plain-http"]
    plain = await run_command([*base[:3], f"{registry.host}/a/nf/upf:1.2", *base[3:]])
    assert plain.ok, plain.output
    lines = plain.output.splitlines()
    assert f"{registry.host}/a/nf/upf:1.2@{image.digest}" in lines
    assert sum(line.startswith("copied sha256:") for line in lines) == len(image.blobs)
    assert "\r" not in plain.output  # no bar in a pipe
    assert await inspect_digest(registry, f"{registry.host}/a/nf/upf:1.2") == image.digest

    bar = await run_command([*base[:3], f"{registry.host}/b/nf/upf:1.2", *base[3:],
                             "--progress", "bar", "--platform", "linux/arm64"])
    assert bar.ok, bar.output
    assert "\r[" in bar.output and f"layers {len(image.manifest_for('linux/arm64').blobs)}/" \
        in bar.output
    assert "filtered index" in bar.output


async def test_copy_command_fails_clearly_without_leaking_the_password(
    secure_registry: Registry, registry: Registry,
) -> None:
    user, _ = secure_registry.credentials or ("", "")
    wrong = "n0t-the-pa55word"
    result = await run_command([
        CLI, "copy", f"{secure_registry.host}/nf/upf:1.2", f"{registry.host}/nf/upf:1.2",
        "--src-creds", f"{user}:{wrong}", "--src-ca", str(secure_registry.ca_path),
        "--dest-plain-http"])
    assert result.returncode == 1
    assert "refused the credentials" in result.output and user in result.output
    assert wrong not in result.output
    bad = await run_command([CLI, "copy", "NOT A REF", f"{registry.host}/x:1"])
    assert bad.returncode == 2 and "clusterregistry copy:" in bad.output
