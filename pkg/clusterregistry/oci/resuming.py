"""Pure decisions for resuming an interrupted blob transfer, kept apart from the I/O.

A link that drops cuts blob downloads and uploads mid-stream. Restarting from
byte zero each time would read a large layer again and again over the link
that is already failing, and never finish when the link drops more often than
a layer takes. So:

- a download is resumed with `Range: bytes=N-`: `body_start` says where the
  answer's body begins in the blob (N for a 206 whose Content-Range agrees, 0
  for a 200 from a source that ignores ranges, which the copier then reads from
  the start, dropping what it already has) and refuses an answer that is
  neither;
- an upload session is asked how much it holds (GET the upload URL: 204 with
  `Range: 0-N`, per the distribution spec): `held_bytes` reads that header;
- `Stalls` bounds retries by progress, not by count: a connection that moved
  the transfer forward and then broke is resumed at once, as often as it
  happens (each time is progress, so the number of resumes is bounded by the
  blob's size); interruptions without progress back off and give up after
  the client's retry limit, with a reason that says where the transfer stuck.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from clusterregistry.errors import DigestMismatchError, RegistryError

__all__ = ["Stalls", "body_start", "held_bytes"]

_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$")
_UPLOAD_RANGE: Final = re.compile(r"^\s*(?:bytes=)?0-(\d+)\s*$")


def body_start(*, status: int, content_range: str | None, content_length: int | None,
               start: int, size: int, what: str) -> int:
    """Where the body of an answer to `GET` (with `Range: bytes=start-` when start > 0)
    begins in a blob of `size` bytes: `start` (a 206 that agrees) or 0 (a 200: the whole
    blob, from a source that ignores ranges). Raises when the answer cannot be used."""
    if status == 200 or (status == 206 and start == 0 and content_range is None):
        if content_length is not None and content_length != size:
            raise DigestMismatchError(
                f"{what}: the source serves {content_length} bytes, the manifest says {size}")
        return 0
    if status != 206:
        raise RegistryError(f"{what}: HTTP {status} to a range request from byte {start}")
    match = _CONTENT_RANGE.match(content_range or "")
    if match is None:
        raise RegistryError(
            f"{what}: a partial answer without a usable Content-Range ({content_range!r})")
    first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
    if total != "*" and int(total) != size:
        raise DigestMismatchError(
            f"{what}: the source says the blob has {total} bytes, the manifest says {size}")
    if first != start or last != size - 1:
        raise RegistryError(
            f"{what}: asked for bytes {start}-, the source sent {first}-{last}")
    return start


def held_bytes(range_header: str | None) -> int:
    """Bytes an upload session holds, from its `Range: 0-N` header (N is the last byte held;
    distribution says `0-0` for an empty session too, so 0-0 counts as none)."""
    if not range_header:
        return 0
    match = _UPLOAD_RANGE.match(range_header)
    if match is None:
        raise RegistryError(f"an upload session answered an unusable Range {range_header!r}")
    last = int(match.group(1))
    return 0 if last == 0 else last + 1


@dataclass
class Stalls:
    """Consecutive interruptions without progress; `limit` of them is too many."""

    limit: int
    best: int = -1
    count: int = 0

    def interrupted(self, position: int) -> int:
        """Record an interruption with the transfer at `position`; returns how many in a row
        happened there without progress (1 after progress). `exhausted` says when to stop."""
        if position > self.best:
            self.best, self.count = position, 1
        else:
            self.count += 1
        return self.count

    @property
    def exhausted(self) -> bool:
        return self.count > self.limit

    def backoff_attempt(self) -> int | None:
        """None: resume at once (the last connection made progress); else the attempt
        number (from 0) for the client's back-off."""
        return None if self.count <= 1 else self.count - 2
