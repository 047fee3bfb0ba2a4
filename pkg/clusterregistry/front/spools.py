"""Blobs on their way from a source, on local disk, for every client that wants them.

One fetch from the source writes a spool file; any number of readers read it
from the start at their own pace and then follow the live tail, so a client
that joins late gets what has arrived at disk speed and the rest as the source
sends it. The directory is bounded: a fetch reserves the blob's size before it
starts, and the file is deleted once the blob is in the registry and the last
reader is done (an unlinked file stays readable through the descriptors open
on it, so deleting never cuts a reader off).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path

from clusterregistry.errors import RetryableError

READ_CHUNK = 1 << 20


class SpoolFullError(RetryableError):
    """The spool directory has no room for another blob now."""


class SpoolFailedError(RetryableError):
    """The fetch feeding a spool failed: readers must cut their response."""


class Spool:
    """One blob being written by its fetch and read by its clients."""

    def __init__(self, path: Path, *, size: int, owner: SpoolDir) -> None:
        self.path = path
        self.size = size  # -1 while unknown
        self.written = 0
        self.complete = False
        self.failure: str | None = None
        self._owner = owner
        self._fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        self._changed = asyncio.Event()
        self.readers = 0
        self._discarded = False

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def append(self, data: bytes) -> None:
        # a local disk write lands in the page cache: far quicker than the network feeding it
        view = memoryview(data)
        while view:
            done = os.write(self._fd, view)
            view = view[done:]
        self.written += len(data)
        self._notify()

    def finish(self) -> None:
        self.complete = True
        self._close_writer()
        self._notify()

    def fail(self, reason: str) -> None:
        self.failure = reason
        self._close_writer()
        self._notify()

    def _close_writer(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def open_reader(self) -> int:
        """A descriptor to read from; taken without awaiting, so a discard cannot come
        between finding the spool and opening it."""
        fd = os.open(self.path, os.O_RDONLY)
        self.readers += 1
        return fd

    def close_reader(self, fd: int) -> None:
        """Give back a descriptor from `open_reader` that was never read."""
        os.close(fd)
        self.readers -= 1
        self._owner.reader_left(self)

    async def read(self, fd: int, *, start: int = 0, end: int | None = None
                   ) -> AsyncGenerator[bytes, None]:
        """Bytes [start, end) as they arrive; SpoolFailedError when the fetch fails first."""
        position = start
        try:
            while True:
                # the blob's last byte waits for the fetch's verdict (size, digest): a client
                # holding all of a Content-Length takes the response as whole, so a corrupt
                # fetch must cut it before then, never after
                limit = (self.written if self.complete or self.size < 0
                         else min(self.written, self.size - 1))
                if end is not None:
                    limit = min(end, limit)
                if position < limit:
                    chunk = os.pread(fd, min(READ_CHUNK, limit - position), position)
                    if not chunk:
                        raise SpoolFailedError(f"spool {self.path.name} ended early")
                    position += len(chunk)
                    yield chunk
                    continue
                if end is not None and position >= end:
                    return
                if self.failure is not None:
                    raise SpoolFailedError(self.failure)
                if self.complete:
                    return
                await self._changed.wait()
        finally:
            os.close(fd)
            self.readers -= 1
            self._owner.reader_left(self)

    def discard(self) -> None:
        """Delete the file; readers still reading keep their descriptors."""
        if self._discarded:
            return
        self._discarded = True
        self._close_writer()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._owner.released(self)


class SpoolDir:
    """The bounded directory of spools; `used` counts reserved bytes."""

    def __init__(self, root: Path, *, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.used = 0
        self._reserved: dict[Path, int] = {}
        self._idle: set[Spool] = set()  # stored and waiting for their last reader
        # files of an earlier process are nobody's now
        if root.exists():
            for stale in root.glob("*.spool"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        root.mkdir(parents=True, exist_ok=True)

    def create(self, *, size: int) -> Spool:
        """A new spool for a blob of `size` bytes (-1: unknown, counted as it grows)."""
        wanted = max(size, 0)
        if self.used + wanted > self.limit:
            raise SpoolFullError(f"the spool has {self.limit - self.used} of {self.limit} bytes "
                            f"free, a blob of {size} bytes does not fit")
        path = self.root / f"{uuid.uuid4().hex}.spool"
        self.used += wanted
        self._reserved[path] = wanted
        return Spool(path, size=size, owner=self)

    def release_when_read(self, spool: Spool) -> None:
        """The blob is stored: delete the spool now, or when its last reader is done."""
        if spool.readers == 0:
            spool.discard()
        else:
            self._idle.add(spool)

    def reader_left(self, spool: Spool) -> None:
        if spool in self._idle and spool.readers == 0:
            self._idle.discard(spool)
            spool.discard()

    def released(self, spool: Spool) -> None:
        self.used -= self._reserved.pop(spool.path, 0)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free
