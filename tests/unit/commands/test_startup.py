"""The command line starts fast: `--version` answers before anything is imported, and a
subcommand's module is light until it runs (issue 16). Import sets, never timings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from clusterregistry import __version__, cli

# what `--version` may not load: the entry points' metadata (email, zipfile), the commands
NOT_FOR_VERSION = ("importlib.metadata", "clusterregistry.commands", "email", "zipfile")


def _modules_after(argv: list[str]) -> tuple[str, list[str]]:
    """Run `clusterregistry ARGV` in a fresh interpreter: (stdout, sys.modules at the end)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from clusterregistry import cli\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        f"        cli.main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps({'out': out.getvalue(), 'modules': sorted(sys.modules)}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    found = json.loads(result.stdout.splitlines()[-1])
    return found["out"], found["modules"]


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_version_answers_before_the_commands_are_even_found() -> None:
    out, modules = _modules_after(["--version"])
    assert out == f"clusterregistry {__version__}\n"
    assert _loaded(modules, NOT_FOR_VERSION) == []


def test_version_in_process_prints_and_returns_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"clusterregistry {__version__}\n"


def test_help_still_lists_every_command_and_the_version_option() -> None:
    out, _ = _modules_after(["--help"])
    assert "--version" in out
    for name in (*cli.BUILTIN, "sandbox", "demo"):
        assert name in out


def test_a_subcommands_version_flag_is_the_subcommands_business() -> None:
    # `copy a b --version` is not the top-level --version: argparse refuses it as before
    result = subprocess.run([sys.executable, "-m", "clusterregistry.cli", "copy", "a", "b",
                             "--version"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2 and "unrecognized arguments: --version" in result.stderr
    assert __version__ not in result.stdout
