"""The house rules hold: ruff, mypy strict, the import-linter layer contracts, and the NATS
boundary (nothing outside `clusterregistry.bus` touches a Bus's nats-py objects).

Run as tests so that CI, which runs `make test`, enforces them as well.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize(
    "argv",
    [
        [str(BIN / "ruff"), "check", "."],
        [str(BIN / "mypy")],
        [str(BIN / "lint-imports")],
    ],
    ids=["ruff", "mypy", "import-linter"],
)
def test_static_check_passes(argv: list[str]) -> None:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


# -- the NATS boundary -------------------------------------------------------------------------
# `Bus` keeps its nats-py client and JetStream context private (`_nc`, `_js`), and so does a
# bucket handle (`_kv`); only `clusterregistry.bus` may reach for them, and within it only
# `bus/translating.py` names nats-py's exception classes (the one translation). Scanned with
# `ast` over everything that can hold a Bus: the product, the entry points, tests, benches.

BUS = ROOT / "pkg" / "clusterregistry" / "bus"
TRANSLATING = BUS / "translating.py"
PRIVATE = frozenset({"_nc", "_js", "_kv", "nc", "js"})  # the last two: their former names
NATS_ERRORS = frozenset({"nats.errors", "nats.js.errors"})


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def boundary_violations(source: str, path: Path) -> list[str]:
    """Where `source` (the file at `path`) crosses the NATS boundary."""
    inside_bus = path.is_relative_to(BUS)
    found = []
    for node in ast.walk(ast.parse(source, str(path))):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if (not inside_bus and isinstance(node, ast.Attribute) and node.attr in PRIVATE
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "nats"))):
            # `self._js` is a class's own attribute (what it was set from is checked too),
            # `nats.js` the nats-py package
            found.append(f"{where}: .{node.attr} of {_dotted(node.value)} (a Bus's nats-py "
                         "object): use a Bus method or a bus adapter")
        if not inside_bus or path == TRANSLATING:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Attribute):
            names = [_dotted(node)]
        if any(name == module or name.startswith(module + ".")
               for name in names for module in NATS_ERRORS):
            found.append(f"{where}: names nats-py's errors; translate them in "
                         "bus/translating.py only")
    return found


def _sources() -> list[Path]:
    roots = [ROOT / "pkg" / "clusterregistry", ROOT / "cmd", ROOT / "bench", ROOT / "tests"]
    return sorted(p for root in roots for p in root.rglob("*.py"))


def test_nothing_outside_the_bus_reaches_for_nats_py() -> None:
    found = [v for path in _sources()
             for v in boundary_violations(path.read_text(encoding="utf-8"), path)]
    assert found == []


@pytest.mark.parametrize(("relative", "source"), [
    ("pkg/clusterregistry/tracker/probe.py", "async def f(bus):\n    await bus._nc.flush()\n"),
    ("pkg/clusterregistry/gc/probe.py", "def f(bus):\n    return bus.js\n"),
    ("tests/integration/probe.py", "async def f(b):\n    await b._js.stream_info('S')\n"),
    ("pkg/clusterregistry/bus/probe.py", "import nats.errors\n"),
    ("pkg/clusterregistry/bus/probe.py", "from nats.js.errors import NotFoundError\n"),
    ("pkg/clusterregistry/bus/probe.py", "import nats\nE = nats.js.errors.APIError\n"),
])
def test_a_probe_violation_is_found(relative: str, source: str) -> None:
    assert boundary_violations(source, ROOT / relative)


def test_the_bus_itself_may_use_them() -> None:
    source = "async def f(bus):\n    await bus._js.stream_info('S')\n"
    assert boundary_violations(source, BUS / "probe.py") == []
    assert boundary_violations("import nats.errors\n", TRANSLATING) == []
    assert boundary_violations("class C:\n    def f(self):\n        return self._js\n",
                               ROOT / "tests" / "probe.py") == []
