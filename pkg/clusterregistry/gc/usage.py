"""How full the registry's storage is: statvfs of its volume, or the sum of its blobs.

In a cluster the registry's storage is a PersistentVolume mounted at the storage
root, so statvfs of that mount point is the truth (it also counts what the
registry itself does not know about, such as upload leftovers). Where no volume
is mounted (the sandbox, a shared disk), statvfs would describe the whole host
disk, so usage is the size of the blobs against the configured `storageSize`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BLOBS = Path("docker") / "registry" / "v2" / "blobs"


@dataclass(frozen=True)
class Usage:
    used_bytes: int
    total_bytes: int
    source: str  # "statvfs" or "blobs"

    @property
    def percent(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes > 0 else 0.0


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (what `du --apparent-size` counts); 0 if absent."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:  # removed while walking (a sweep, an upload finishing)
                continue
    return total


def blob_bytes(storage_path: Path) -> int:
    """The size of every blob the registry stores (layers, configs and manifests)."""
    return tree_bytes(storage_path / BLOBS)


def measure(storage_path: Path | str, *, source: str = "auto", configured_bytes: int) -> Usage:
    """Usage by `source`: `statvfs`, `blobs`, or `auto` (statvfs only on a mount point)."""
    path = Path(storage_path)
    if source == "auto":
        source = "statvfs" if os.path.ismount(path) else "blobs"
    if source == "statvfs":
        stats = os.statvfs(path)
        total = stats.f_blocks * stats.f_frsize
        used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
        return Usage(used_bytes=used, total_bytes=total, source="statvfs")
    if source != "blobs":
        raise ValueError(f"unknown usage source {source!r}")
    return Usage(used_bytes=blob_bytes(path), total_bytes=configured_bytes, source="blobs")
