"""`clusterregistry gc run-once [--dry-run]`: one garbage collection run now, and what it did.

By default the running GC process does the run (a NATS request to
`subjects.GC_RUN_REQUEST`, answered by one replica), so the run uses the very
configuration, credentials and volume the deployment gave GC. `--in-process`
runs it here instead (a workstation with the registry's storage, a debug
session); GC's lock still keeps it apart from a run of the deployed GC.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from clusterregistry.commands import Command
from clusterregistry.errors import ClusterRegistryError, ConfigError

__all__ = ["COMMAND", "HELP", "add_arguments", "command"]

HELP = "garbage collection: `gc run-once [--dry-run]`"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gc_command", required=True)
    once = sub.add_parser("run-once", help="one GC run now; prints its last event as JSON")
    once.add_argument("--dry-run", action="store_true",
                      help="report what would be collected, change nothing")
    once.add_argument("--force", action="store_true",
                      help="collect even below clusterRegistryGCThreshold")
    once.add_argument("--in-process", action="store_true",
                      help="run here rather than asking the running gc process")
    once.add_argument("--config", type=Path, default=None, help="settings YAML")
    once.add_argument("--kubeconfig", default=None, help="with --in-process: the API server")
    once.add_argument("--timeout", type=float, default=3600.0,
                      help="seconds to wait for the running gc's answer")


def command(args: argparse.Namespace) -> int:
    """0 when the run finished or was skipped, 1 when it failed, 2 for bad settings."""
    # the GC and its clients (NATS, Kubernetes), only when the command runs
    import msgspec  # noqa: PLC0415

    from clusterregistry import config  # noqa: PLC0415
    from clusterregistry.gc.serving import request_run, run_in_process  # noqa: PLC0415

    # the connection's own warnings (reconnecting...) are noise here; errors still show
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"clusterregistry: {exc}", file=sys.stderr)
        return 2
    try:
        if args.in_process:
            event = asyncio.run(run_in_process(settings, dry_run=args.dry_run,
                                               force=args.force, kubeconfig=args.kubeconfig))
        else:
            event = asyncio.run(request_run(settings, dry_run=args.dry_run, force=args.force,
                                            timeout=args.timeout))
    except ClusterRegistryError as exc:
        print(f"clusterregistry gc: {exc}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(event).decode())
    return 0 if event.event in ("finished", "skipped") else 1


COMMAND = Command(HELP, add_arguments, command)
