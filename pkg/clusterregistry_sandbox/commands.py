"""The `clusterregistry sandbox` and `clusterregistry demo` subcommands.

The product's command line never imports the sandbox: this distribution
registers `DEMO` and `SANDBOX` in the entry-point group
`clusterregistry.commands` (its pyproject.toml), and `clusterregistry.cli`
loads one only when that subcommand is asked for. This module stays light
(argparse only); the launchers, kubesim and the scenarios are imported when
the command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from clusterregistry.commands import Command

__all__ = ["DEFAULT_DIR", "DEMO", "DEMO_HELP", "SANDBOX", "SANDBOX_HELP", "add_demo_arguments",
           "add_sandbox_arguments", "demo_command", "sandbox_command"]

DEFAULT_DIR = Path(".sandbox")

SANDBOX_HELP = "run the whole system on this machine: up, status, down"
FLAKY_LINK_HELP = (
    "(up) put a fault proxy between the artifact store and what fetches from it (the mirror "
    "workers and the registry front; kubelets pull from the front): KEY=VALUE pairs, comma "
    "separated, e.g. cut=16Mi,seed=7,latency=50ms,rate=10Mi. "
    "cut=SIZE cuts every connection once SIZE bytes came from the store "
    "(direction=up counts what goes to it, direction=both either way); "
    "seed=N cuts at random points instead, uniform in 1..2xSIZE, the same ones every run; "
    "latency=DURATION (50ms, 0.2s) delays every byte each way; "
    "rate=SIZE caps the link at SIZE bytes/s each way, all connections together. "
    "SIZE: a number of bytes with k, M, G (x1000) or Ki, Mi, Gi (x1024). "
    "Image references, pull secrets and mirror.registries name the proxy's address; the "
    "store itself listens on another port, which only the sandbox's own pushes use")
DEMO_HELP = "run the demonstration scenario on a fresh sandbox and verify every step"


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("up", "status", "down"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"the sandbox's directory (default {DEFAULT_DIR})")
    parser.add_argument("--nats-cluster", action="store_true",
                        help="a 3-node NATS cluster with R3 streams instead of one server")
    parser.add_argument("--foreground", action="store_true",
                        help="(up) run in this process until Ctrl-C instead of detached")
    parser.add_argument("--flaky-link", type=_flaky_link, default=None, metavar="FAULTS",
                        help=FLAKY_LINK_HELP)


def _flaky_link(text: str) -> str:
    """Checked at parse time (a typo fails `up` at once), kept as text for the supervisor."""
    from clusterregistry_sandbox.faults import parse_faults  # noqa: PLC0415

    try:
        parse_faults(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def sandbox_command(args: argparse.Namespace) -> int:
    from clusterregistry_sandbox import hosting  # noqa: PLC0415 (kubesim and the launchers)
    from clusterregistry_sandbox.faults import parse_faults  # noqa: PLC0415
    from clusterregistry_sandbox.systems import SystemOptions  # noqa: PLC0415

    if args.flaky_link is not None and args.action != "up":
        print("clusterregistry sandbox: --flaky-link goes with up", file=sys.stderr)
        return 2
    if args.action == "up" and args.foreground:
        options = SystemOptions(
            nats_cluster=args.nats_cluster,
            flaky_link=parse_faults(args.flaky_link) if args.flaky_link is not None else None)
        return asyncio.run(hosting.run_foreground(args.dir.resolve(), options))
    root = args.dir.resolve()
    if args.action == "up":
        code, text = asyncio.run(hosting.up(root, nats_cluster=args.nats_cluster,
                                            flaky_link=args.flaky_link))
    elif args.action == "status":
        code, text = asyncio.run(hosting.status(root))
    else:
        code, text = asyncio.run(hosting.down(root))
    print(text, file=sys.stdout if code == 0 else sys.stderr)
    return code


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the demo's sandbox lives (default: a temporary directory, "
                             "removed afterwards)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the sandbox directory (logs, state) in place afterwards")


def demo_command(args: argparse.Namespace) -> int:
    from clusterregistry_sandbox import scenarios  # noqa: PLC0415 (the whole system)

    try:
        return asyncio.run(scenarios.run_demo(directory=args.dir, keep=args.keep))
    except (KeyboardInterrupt, asyncio.CancelledError):
        # interrupted (Ctrl-C, SIGTERM): the sandbox was stopped on the way out
        print("clusterregistry demo: interrupted", file=sys.stderr)
        return 130


SANDBOX = Command(SANDBOX_HELP, add_sandbox_arguments, sandbox_command)
DEMO = Command(DEMO_HELP, add_demo_arguments, demo_command)
