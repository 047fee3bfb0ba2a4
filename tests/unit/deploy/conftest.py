"""The deployment as built: every overlay rendered once per session with the venv's kubectl.

`kubectl kustomize` is what operators run (`kubectl kustomize deploy/kustomize/overlays/ha |
kubectl apply -f -`), so the tests read exactly the objects a cluster would receive. Besides
the two overlays, the tests build two compositions an operator would write: the HA overlay
with every optional component, and the HA overlay with the large registry scale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
KUBECTL = Path(sys.executable).parent / "kubectl"

Obj = dict[str, Any]
Build = Callable[[str], list[Obj]]

COMPONENTS = ("cert-manager", "servicemonitor", "networkpolicies")

# name -> (resources, components), paths relative to deploy/kustomize
COMPOSITIONS: dict[str, tuple[list[str], list[str]]] = {
    "ha+components": (["overlays/ha"], [f"components/{c}" for c in COMPONENTS]),
    "ha+large": (["overlays/ha"], ["components/registry-scale-large"]),
}


def kustomize(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _compose(directory: Path, resources: list[str], components: list[str]) -> None:
    directory.mkdir(parents=True)
    rel = [os.path.relpath(KUSTOMIZE / r, directory) for r in resources]
    comps = [os.path.relpath(KUSTOMIZE / c, directory) for c in components]
    (directory / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": rel,
        "components": comps,
    }))


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """`build("ha")` -> the objects of overlays/ha (also "base", "dev", and COMPOSITIONS)."""
    cache: dict[str, list[Obj]] = {}

    def build_(name: str) -> list[Obj]:
        if name not in cache:
            if name == "base":
                directory = KUSTOMIZE / "base"
            elif name in COMPOSITIONS:
                directory = tmp_path_factory.mktemp("kustomize") / name
                _compose(directory, *COMPOSITIONS[name])
            else:
                directory = KUSTOMIZE / "overlays" / name
            cache[name] = kustomize(directory)
        return cache[name]

    return build_
