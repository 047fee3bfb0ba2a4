"""The three distributions of this repository, built as pip builds them, and what each ships.

The product's image runs `pip install .` on pyproject.toml, README.md and pkg/: its
wheel must hold the product alone (no kubesim, no sandbox, no tests, no console script
but `clusterregistry`, no bcrypt). kubesim and the sandbox build from their own
pyproject.toml; the sandbox reaches the CLI only through its entry points.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_LITTER = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.pyc")


def _wheel(source: Path, out: Path) -> zipfile.ZipFile:
    """Build `source`'s wheel as pip does (an isolated build, from the configured index)."""
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out),
         str(source)],
        capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def _entry_points(wheel: zipfile.ZipFile) -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(_dist_info(wheel, "entry_points.txt"))
    return {section: dict(parser[section]) for section in parser.sections()}


def _requires(wheel: zipfile.ZipFile) -> set[str]:
    """The names of the distributions the wheel requires (extras' too)."""
    found = re.findall(r"^Requires-Dist: *([A-Za-z0-9._-]+)", _dist_info(wheel, "METADATA"),
                       flags=re.MULTILINE)
    return {name.lower() for name in found}


def test_the_product_wheel_ships_the_product_alone(tmp_path: Path) -> None:
    # the whole pkg/, more than the Dockerfile copies (pkg/clusterregistry): the product's
    # packaging itself must leave kubesim and the sandbox out
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "pkg", source / "pkg", ignore=_LITTER)

    wheel = _wheel(source, tmp_path / "out")
    files = wheel.namelist()
    tops = {name.split("/", 1)[0] for name in files}
    assert tops == {"clusterregistry", "clusterregistry-0.1.0.dist-info"}, sorted(tops)
    assert "clusterregistry/cli.py" in files
    assert "clusterregistry/commands/tracing.py" in files
    assert not [f for f in files if "kubesim" in f or "sandbox" in f or "tests/" in f]
    assert _entry_points(wheel) == {
        "console_scripts": {"clusterregistry": "clusterregistry.cli:main",
                            "kubectl-clusterregistry": "clusterregistry.cli:kubectl_main"}}
    requires = _requires(wheel)
    assert "bcrypt" not in requires and "kubesim" not in requires
    assert {"nats-py", "kubernetes-asyncio", "cryptography", "cel-python"} <= requires


@pytest.mark.parametrize(("directory", "top", "entry_points"), [
    ("pkg/kubesim", "kubesim",
     {"console_scripts": {"kubesim": "kubesim.__main__:main"}}),
    ("pkg/clusterregistry_sandbox", "clusterregistry_sandbox",
     {"clusterregistry.commands": {"demo": "clusterregistry_sandbox.commands:DEMO",
                                   "sandbox": "clusterregistry_sandbox.commands:SANDBOX"}}),
])
def test_kubesim_and_the_sandbox_build_on_their_own(
    tmp_path: Path, directory: str, top: str, entry_points: dict[str, dict[str, str]]
) -> None:
    source = tmp_path / "src"
    shutil.copytree(ROOT / directory, source, ignore=_LITTER)
    wheel = _wheel(source, tmp_path / "out")
    tops = {name.split("/", 1)[0] for name in wheel.namelist()}
    assert tops == {top, f"{top}-0.1.0.dist-info"}, sorted(tops)
    assert f"{top}/__init__.py" in wheel.namelist()
    assert _entry_points(wheel) == entry_points
