"""`clusterregistry copy SRC DST`: one image copied by the mirror's engine, from a terminal.

The same Copier, clients and settings as the workers (registries, CAs and
credentials from `--config`), plus what a person at a shell wants: a
progress bar (bytes, rate, layers done) when stderr is a terminal, one plain
line per blob otherwise (CI logs, pipes), and the copied digest on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from clusterregistry.commands import Command
from clusterregistry.errors import ClusterRegistryError, ConfigError

if TYPE_CHECKING:
    from clusterregistry.config import MirrorSettings
    from clusterregistry.oci.authenticating import Credentials
    from clusterregistry.oci.copying import CopyReport

__all__ = ["COMMAND", "HELP", "BarProgress", "PlainProgress", "add_arguments", "command"]

HELP = "copy one image (every platform, or --platform ones) between registries"
MiB = 1 << 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="source image, e.g. myacr.azurecr.io/nf/upf:1.2")
    parser.add_argument("destination", help="destination image, e.g. 127.0.0.1:5000/nf/upf:1.2")
    parser.add_argument("--config", default=None, help="settings YAML (mirror.* keys apply)")
    parser.add_argument("--platform", action="append", default=[],
                        help="os/arch[/variant] to copy from an index (repeatable; default all)")
    parser.add_argument("--authfile", default=None,
                        help="a docker config JSON with credentials (as skopeo and podman use)")
    for side in ("src", "dest"):
        parser.add_argument(f"--{side}-creds", default=None, metavar="USER:PASSWORD",
                            help=f"{side} credentials (visible to other local users in ps; "
                            "prefer --authfile)")
        parser.add_argument(f"--{side}-ca", default=None, metavar="PEM",
                            help=f"extra CA bundle to trust for the {side} registry")
        parser.add_argument(f"--{side}-plain-http", action="store_true",
                            help=f"talk to the {side} registry over plain HTTP")
        parser.add_argument(f"--{side}-insecure", action="store_true",
                            help=f"do not verify the {side} registry's TLS certificate")
    parser.add_argument("--progress", choices=("auto", "bar", "plain", "none"), default="auto")


class BarProgress:
    """One line, redrawn in place: bar, bytes, rate, blobs done."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.total_bytes = 0
        self.blobs = 0
        self.done = 0
        self.moved = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def planned(self, blobs: int, total_bytes: int) -> None:
        self.blobs, self.total_bytes = blobs, total_bytes
        self._draw(force=True)

    def advanced(self, nbytes: int) -> None:
        self.moved += nbytes
        self._draw()

    def blob_done(self, digest: str, how: str, size: int) -> None:
        self.done += 1
        if how != "copied":
            self.moved += size  # skipped and mounted blobs count as there
        self._draw(force=True)

    def _draw(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < 0.1:
            return
        self._drawn = now
        share = self.moved / self.total_bytes if self.total_bytes else 1.0
        width = 30
        filled = int(width * min(share, 1.0))
        rate = self.moved / MiB / max(now - self.started, 1e-6)
        self.stream.write(
            f"\r[{'#' * filled}{'-' * (width - filled)}] {self.moved / MiB:8.1f}/"
            f"{self.total_bytes / MiB:.1f} MiB {rate:7.1f} MiB/s  layers {self.done}/{self.blobs}")
        self.stream.flush()

    def finish(self) -> None:
        self._draw(force=True)
        self.stream.write("\n")


class PlainProgress:
    """One line per event, for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.blobs = 0
        self.done = 0

    def planned(self, blobs: int, total_bytes: int) -> None:
        self.blobs = blobs
        print(f"copying {blobs} blobs, {total_bytes / MiB:.1f} MiB", file=self.stream)

    def advanced(self, nbytes: int) -> None:
        pass

    def blob_done(self, digest: str, how: str, size: int) -> None:
        self.done += 1
        print(f"{how} {digest} ({size / MiB:.1f} MiB) [{self.done}/{self.blobs}]",
              file=self.stream)

    def finish(self) -> None:
        pass


def _settings(args: argparse.Namespace, source: str, destination: str) -> MirrorSettings:
    from clusterregistry import config  # noqa: PLC0415
    from clusterregistry.config import MirrorSettings, RegistryAccess  # noqa: PLC0415

    settings = config.load(args.config).mirror
    accesses = {access.host: access for access in settings.registries}
    for side, host in (("src", source), ("dest", destination)):
        current = accesses.get(host) or RegistryAccess(host=host)
        creds = getattr(args, f"{side}_creds")
        user, _, password = creds.partition(":") if creds else (current.username, "",
                                                                 current.password)
        accesses[host] = RegistryAccess(
            host=host,
            plain_http=getattr(args, f"{side}_plain_http") or current.plain_http,
            ca_file=getattr(args, f"{side}_ca") or current.ca_file,
            insecure_skip_verify=getattr(args, f"{side}_insecure") or current.insecure_skip_verify,
            username=user, password=password if creds else current.password,
            password_file="" if creds else current.password_file,
            max_connections=current.max_connections)
    return MirrorSettings(**{
        **{f: getattr(settings, f) for f in settings.__struct_fields__},
        "registries": list(accesses.values())})


def _authfile(path: str | None) -> dict[str, Credentials]:
    from clusterregistry.oci.authenticating import parse_docker_config  # noqa: PLC0415

    if not path:
        return {}
    try:
        return parse_docker_config(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--authfile {path}: {exc}") from None


async def _copy(args: argparse.Namespace, extra: dict[str, Credentials]) -> CopyReport:
    # the mirror's engine and its HTTP clients, only when the command runs
    from clusterregistry import references  # noqa: PLC0415
    from clusterregistry.oci.clients import (  # noqa: PLC0415
        RegistryClients,
        copy_options,
        pacer,
    )
    from clusterregistry.oci.copying import Copier  # noqa: PLC0415

    try:
        source = references.parse(args.source).with_default_tag()
        destination = references.parse(args.destination).with_default_tag()
    except references.InvalidReferenceError as exc:
        raise ConfigError(str(exc)) from None
    settings = _settings(args, source.domain, destination.domain)
    clients = RegistryClients(settings, local_registry="")
    clients.keychain.update(extra)
    mode = args.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "plain"
    progress: BarProgress | PlainProgress | None = (
        BarProgress(sys.stderr) if mode == "bar" else
        PlainProgress(sys.stderr) if mode == "plain" else None)
    try:
        report = await Copier(copy_options(settings), pacer=pacer(settings)).copy(
            clients.source(source.domain), source.path, source.version,
            clients.destination(destination.domain), destination.path,
            tag=destination.tag or None, platforms=args.platform or settings.platforms,
            progress=progress)
    finally:
        if progress is not None:
            progress.finish()
        await clients.close()
    return report


def command(args: argparse.Namespace) -> int:
    try:
        report = asyncio.run(_copy(args, _authfile(args.authfile)))
    except ConfigError as exc:
        print(f"clusterregistry copy: {exc}", file=sys.stderr)
        return 2
    except ClusterRegistryError as exc:
        print(f"clusterregistry copy: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    rate = report.bytes_copied / MiB / max(report.duration_seconds, 1e-6)
    state = "already present" if report.already_present else (
        f"{report.blobs_copied} copied, {report.blobs_mounted} mounted, "
        f"{report.blobs_skipped} skipped")
    print(f"{args.destination}@{report.digest}")
    print(f"{report.size / MiB:.1f} MiB image; {report.bytes_copied / MiB:.1f} MiB moved in "
          f"{report.duration_seconds:.2f}s ({rate:.1f} MiB/s); blobs: {state}"
          + (f"; platforms: {', '.join(report.platforms)}" if report.platforms else "")
          + ("; filtered index (digest differs from the source's)" if report.filtered else ""),
          file=sys.stderr)
    return 0


COMMAND = Command(HELP, add_arguments, command)
