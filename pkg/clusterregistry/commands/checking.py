"""`clusterregistry config [--file PATH]`: check the settings and print them as resolved.

The same `config.load` every process starts with (the YAML file, then the
environment), so an operator sees what a process would run with, or the
error that would stop it, before deploying.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clusterregistry.commands import Command
from clusterregistry.errors import ConfigError

__all__ = ["COMMAND", "HELP", "add_arguments", "command"]

HELP = "validate settings and print them as resolved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, default=None, help="settings YAML (the ConfigMap)")


def command(args: argparse.Namespace) -> int:
    """0 with the settings on stdout, 2 with the error on stderr."""
    import msgspec  # noqa: PLC0415
    import yaml  # noqa: PLC0415

    from clusterregistry import config  # noqa: PLC0415

    try:
        settings = config.load(args.file)
    except ConfigError as exc:
        print(f"clusterregistry: {exc}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(msgspec.to_builtins(settings), sort_keys=False), end="")
    return 0


COMMAND = Command(HELP, add_arguments, command)
