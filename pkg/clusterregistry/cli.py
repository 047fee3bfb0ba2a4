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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clusterregistry",
        description="An event-driven edge registry for Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"clusterregistry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("config", help="validate settings and print them as resolved")
    check.add_argument("--file", type=Path, default=None, help="settings YAML (the ConfigMap)")
    sub.add_parser("demo", help="run the demonstration scenario in the local sandbox")
    tracing.add_arguments(sub.add_parser("trace", help=tracing.HELP))
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
    if args.command == "demo":
        print(
            "clusterregistry demo: not yet. The sandbox (relay, webhook, tracker, reconciler, "
            "mirror, gc on this machine) is still being built; `make test` shows what works.",
            file=sys.stderr,
        )
        return 3
    return 2


if __name__ == "__main__":
    sys.exit(main())
