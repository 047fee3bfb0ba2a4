"""The `clusterregistry` command line.

Subcommands grow with the services; each stays thin: parse arguments, load
settings, call the service.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec
import yaml

from clusterregistry import __version__, config, tracing
from clusterregistry.errors import ConfigError
from clusterregistry.gc import commanding as gc_commanding
from clusterregistry.mirror import commanding as mirror_commanding
from clusterregistry.sandbox import commands


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterregistry",
        description="An event-driven edge registry for Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"clusterregistry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("config", help="validate settings and print them as resolved")
    check.add_argument("--file", type=Path, default=None, help="settings YAML (the ConfigMap)")
    commands.add_demo_arguments(sub.add_parser("demo", help=commands.DEMO_HELP))
    commands.add_sandbox_arguments(sub.add_parser("sandbox", help=commands.SANDBOX_HELP))
    tracing.add_arguments(sub.add_parser("trace", help=tracing.HELP))
    gc_commanding.add_arguments(sub.add_parser("gc", help=gc_commanding.HELP))
    mirror_commanding.add_arguments(sub.add_parser("copy", help=mirror_commanding.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "config":
        try:
            settings = config.load(args.file)
        except ConfigError as exc:
            print(f"clusterregistry: {exc}", file=sys.stderr)
            return 2
        print(yaml.safe_dump(msgspec.to_builtins(settings), sort_keys=False), end="")
        return 0
    if args.command == "trace":
        return tracing.command(args)
    if args.command == "copy":
        return mirror_commanding.command(args)
    if args.command == "gc":
        return gc_commanding.command(args)
    if args.command == "demo":
        return commands.demo_command(args)
    if args.command == "sandbox":
        return commands.sandbox_command(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
