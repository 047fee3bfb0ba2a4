"""The `clusterregistry` command line: parse, pick the subcommand, run it.

The subcommands live in `clusterregistry.commands`, one module each; this
module only knows their names. Other installed distributions add theirs
through the entry-point group `clusterregistry.commands` (an entry point
names a `Command`): the sandbox distribution registers `demo` and
`sandbox` there, so a checkout with `make setup` has them while the
product's image, which installs the product alone, neither has nor imports
them. Only the asked-for subcommand's module is imported (all of them for
`--help`), and each imports its heavy parts only when it runs.

The same command line is a kubectl plugin: the console script
`kubectl-clusterregistry` (`kubectl_main`) makes `kubectl clusterregistry status`
what `clusterregistry status` is.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from clusterregistry import __version__

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from clusterregistry.commands import Command

__all__ = ["BUILTIN", "kubectl_main", "main"]

# the product's own subcommands: name -> the `Command` of its module in clusterregistry.commands
BUILTIN: dict[str, str] = {
    "config": "clusterregistry.commands.checking:COMMAND",
    "trace": "clusterregistry.commands.tracing:COMMAND",
    "copy": "clusterregistry.commands.copying:COMMAND",
    "gc": "clusterregistry.commands.collecting:COMMAND",
    "status": "clusterregistry.commands.surveying:COMMAND",
}


def _available() -> dict[str, EntryPoint]:
    """Every subcommand by name: the built-in ones, then what other distributions register."""
    # importlib.metadata costs tens of milliseconds (email, zipfile, pathlib): only here
    from importlib.metadata import EntryPoint, entry_points  # noqa: PLC0415

    from clusterregistry.commands import ENTRY_POINT_GROUP  # noqa: PLC0415

    found = {name: EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in BUILTIN.items()}
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        found.setdefault(entry.name, entry)  # a distribution cannot replace a built-in
    return found


def _load(entry: EntryPoint) -> Command:
    return _checked(entry.name, entry.value, entry.load())


def _builtin(name: str) -> Command:
    """A built-in subcommand by its module path, without the entry points' metadata."""
    import importlib  # noqa: PLC0415

    value = BUILTIN[name]
    module, _, attribute = value.partition(":")
    return _checked(name, value, getattr(importlib.import_module(module), attribute))


def _checked(name: str, value: str, command: object) -> Command:
    from clusterregistry.commands import Command  # noqa: PLC0415

    if not isinstance(command, Command):
        raise TypeError(f"entry point {name} = {value} is not a Command")
    return command


def _add(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
         command: Command) -> None:
    subparser = sub.add_parser(name, help=command.help)
    command.add_arguments(subparser)
    subparser.set_defaults(run=command.run)


def _asked_for(argv: list[str]) -> str | None:
    # the top level has options without values only (--help, --version)
    return next((arg for arg in argv if not arg.startswith("-")), None)


def _parser(argv: list[str], prog: str = "clusterregistry") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An event-driven edge registry for Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"clusterregistry {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    asked = _asked_for(argv)
    listing = asked is None and any(arg in ("-h", "--help") for arg in argv)
    if asked in BUILTIN and not listing:
        # the usual case: a distribution cannot replace a built-in, so the entry points'
        # scan (importlib.metadata reads every installed distribution's metadata, tens of
        # milliseconds of CPU) could not change what runs
        _add(sub, asked, _builtin(asked))
        return parser
    available = _available()
    for name, entry in available.items():
        if name == asked or listing:
            _add(sub, name, _load(entry))
        elif asked not in available:
            sub.add_parser(name)  # named in the usage and the error; not loaded
    return parser


def main(argv: list[str] | None = None, *, prog: str = "clusterregistry") -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if _asked_for(arguments) is None and "--version" in arguments and not (
            {"-h", "--help"} & set(arguments)):
        # what argparse's version action prints, without building the parser
        print(f"clusterregistry {__version__}")
        return 0
    args = _parser(arguments, prog).parse_args(arguments)
    code: int = args.run(args)
    return code


def kubectl_main(argv: list[str] | None = None) -> int:
    """`kubectl clusterregistry ...`: kubectl runs the `kubectl-clusterregistry` found on
    PATH with the arguments after the plugin's name, so the same command line answers."""
    return main(argv, prog="kubectl clusterregistry")


if __name__ == "__main__":
    sys.exit(main())
