"""The image the manifests run: the Dockerfile copies what exists and nothing .dockerignore
drops, runs as the user the manifests declare, and every Deployment's command is an entry
point of this repository that accepts the arguments it is given.

No container engine runs on the build machines, so the image itself is not built here.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
Build = Callable[[str], list[dict[str, Any]]]
IMAGE = "ghcr.io/clusterregistry/clusterregistry"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def ignored(path: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, `!` re-includes."""
    verdict = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        if any(fnmatch.fnmatch("/".join(parts[i:j]), pattern)
               for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)
               if pattern.count("/") == "/".join(parts[i:j]).count("/")):
            verdict = not negate
    return verdict


def clusterregistry_containers(objs: list[dict[str, Any]]) -> list[tuple[dict[str, Any],
                                                                        dict[str, Any]]]:
    out = []
    for obj in objs:
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            out += [(pod, c) for c in pod["containers"] if c["image"].startswith(IMAGE + ":")]
    return out


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    copies = [args.split() for op, args in instructions() if op == "COPY"]
    sources = [src for args in copies if not args[0].startswith("--from")
               for src in args[:-1]]
    assert sources, "the Dockerfile copies nothing"
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not ignored(src), f"{src} is excluded by .dockerignore"
    # what the image must not carry
    for path in (".venv", ".git", "tests", "bench", "deploy"):
        assert ignored(path), path
    assert not ignored("pkg/clusterregistry/config.py")
    assert ignored("pkg/clusterregistry/__pycache__")


def test_the_python_version_is_one_the_project_supports() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split("."))
    bases = [args.split()[0] for op, args in instructions() if op == "FROM"]
    assert len(bases) == 2  # a build stage and the runtime stage, the same Python
    versions = {tuple(int(p) for p in re.match(r"python:(\d+\.\d+)", b).group(1).split("."))
                for b in bases}
    assert len(versions) == 1 and versions.pop() >= minimum


@pytest.mark.parametrize("name", ["dev", "ha"])
def test_the_image_user_is_the_manifests_user(build: Build, name: str) -> None:
    (user,) = [args for op, args in instructions() if op == "USER"]
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0
    containers = clusterregistry_containers(build(name))
    # webhook, relay, tracker, reconciler, mirror, gc and the registry front
    assert len(containers) == 7
    for pod, container in containers:
        ctx = {**pod["securityContext"], **container["securityContext"]}
        assert (ctx["runAsUser"], ctx["runAsGroup"]) == (uid, gid)
    # bytecode is compiled at build time and never written at run time (read-only root)
    env = " ".join(args for op, args in instructions() if op == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_every_deployment_command_is_an_entry_point_that_takes_its_arguments(
    build: Build,
) -> None:
    (workdir,) = [args for op, args in instructions() if op == "WORKDIR"][-1:]
    copied = {dst: src for op, args in instructions() if op == "COPY"
              for *srcs, dst in [args.split()] for src in srcs if not src.startswith("--")}
    for _, container in clusterregistry_containers(build("ha")):
        python, script = container["command"]
        assert python == "python"
        image_dir, _, filename = script.rpartition("/")
        assert image_dir in copied, f"{image_dir} is not copied into the image"
        local = ROOT / copied[image_dir] / filename
        assert local.is_file(), f"{container['name']}: {local} does not exist"
        help_text = subprocess.run(
            [sys.executable, str(local), "--help"], capture_output=True, text=True,
            timeout=60, check=True, cwd=ROOT).stdout
        for flag in (a for a in container["args"] if a.startswith("--")):
            assert re.search(rf"(^|\s|\[){re.escape(flag)}\b", help_text), (
                f"{local.name} does not accept {flag}")
    assert workdir == "/app"
