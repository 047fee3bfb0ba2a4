"""`clusterregistry copy` loads no Kubernetes or NATS client, nor the sandbox or kubesim: an
actual copy between two local registries, in a process of its own, whose `sys.modules` is
read at exit (issue 16). The import set is pinned, never a timing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from clusterregistry_sandbox.registries import Registry
from clusterregistry_sandbox.supervising import run_command
from tests.world.images import BuildImage, PushImage

pytestmark = pytest.mark.integration

# none of these may be loaded by a copy: the clients the services use, their adapters, and
# the distributions the product never ships (the sandbox, the simulator)
ABSENT = ("nats", "kubernetes_asyncio", "kubernetes", "clusterregistry.kube",
          "clusterregistry.bus", "clusterregistry_sandbox", "kubesim")
# start-up a copy does not pay for: the entry points' scan of every installed distribution
# (a built-in command cannot be replaced, so its name alone is enough) and PyYAML, which
# only a --config file needs
NOT_STARTED = ("importlib.metadata", "yaml")

# runs the console script's `main` as the script does, then writes sys.modules where asked
WRAPPER = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from clusterregistry.cli import main
sys.exit(main())
"""


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


async def test_a_real_copy_loads_no_cluster_client(
    tmp_path: Path, secure_registry: Registry, registry: Registry, build_image: BuildImage,
    push_image: PushImage,
) -> None:
    image = build_image("nf/upf", tag="1.2", platforms=("linux/amd64", "linux/arm64"))
    await push_image(image, secure_registry, "nf/upf")
    user, password = secure_registry.credentials or ("", "")
    out = tmp_path / "modules.json"
    result = await run_command([
        sys.executable, "-c", WRAPPER, str(out), "copy",
        f"{secure_registry.host}/nf/upf:1.2", f"{registry.host}/nf/upf:1.2",
        "--src-creds", f"{user}:{password}", "--src-ca", str(secure_registry.ca_path),
        "--dest-plain-http", "--progress", "none"], timeout=120)
    assert result.ok, result.output
    assert f"{registry.host}/nf/upf:1.2@{image.digest}" in result.output
    modules = json.loads(out.read_text())
    # the copy really ran through the engine and its HTTP client...
    assert {"clusterregistry.oci.copying", "clusterregistry.oci.clients", "aiohttp"} <= set(
        modules)
    # ...and nothing of a cluster's, nor what its start-up can do without
    assert _loaded(modules, ABSENT) == []
    assert _loaded(modules, NOT_STARTED) == []


async def test_copy_help_loads_not_even_the_engine(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    result = await run_command([sys.executable, "-c", WRAPPER, str(out), "copy", "--help"],
                               timeout=60)
    assert result.ok, result.output
    modules = json.loads(out.read_text())
    assert _loaded(modules, (*ABSENT, "aiohttp", "clusterregistry.oci", "msgspec")) == []
