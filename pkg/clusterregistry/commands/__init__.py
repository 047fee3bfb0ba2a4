"""The `clusterregistry` subcommands, one module each; `cli.py` only parses and dispatches.

| command   | module       | what it does                                               |
|-----------|--------------|------------------------------------------------------------|
| `config`  | `checking`   | validate the settings and print them as resolved           |
| `trace`   | `tracing`    | follow the event streams as a readable timeline            |
| `copy`    | `copying`    | copy one image with the mirror's engine, from a terminal   |
| `gc`      | `collecting` | one garbage collection run now (`gc run-once`)             |
| `status`  | `surveying`  | health in one screen (also `kubectl clusterregistry status`) |

Each module is light to import (argparse and its own text) and exports one
`Command`; it imports what the command needs (NATS, the registry clients, the
GC) only when the command runs, so `clusterregistry --version` or `copy`
loads no Kubernetes client. Other installed distributions add commands
through the entry-point group `clusterregistry.commands` (see `cli.py`): the
sandbox distribution registers `demo` and `sandbox` there, so the product
never imports it. The commands sit at the top of the layers with `cli`: they
may import any service or adapter, and nothing below imports them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ENTRY_POINT_GROUP", "Command"]

# the entry-point group other distributions register their subcommands in
ENTRY_POINT_GROUP = "clusterregistry.commands"


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line help, its arguments, and what runs it (the exit code)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
