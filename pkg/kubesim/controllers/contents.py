"""A node's content store: the blobs and image records a containerd keeps on disk.

A real node holds an image only when its manifest and every blob the manifest
names are in containerd's content store (`/var/lib/containerd/io.containerd.
content.v1.content/blobs/sha256/<hex>`), and its image records map names
(`host/repo:tag`, `host/repo@sha256:...`) to a target descriptor. The
simulated kubelet keeps the same on disk under `<state>/nodes/<node>/`:

    content/blobs/sha256/<hex>    committed blobs (manifests, indexes, configs, layers)
    content/ingest/<ref>          a blob being written; renamed into blobs/ on commit
    images.json                   name -> {"digest", "mediaType", "size", "platform"}

So deleting a blob from a node's directory makes the image absent on that
node, exactly as a damaged containerd store would, and a kubesim restarted on
the same state directory finds its nodes' images again.

Writes are committed atomically (rename) only after the size and sha256 were
checked while streaming; nothing unverified is ever visible under blobs/.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})


# the most pieces one writev takes (Linux: 1024)
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16


class CommitError(Exception):
    """A blob whose bytes do not match its descriptor: containerd's failed precondition."""


@dataclass(frozen=True)
class ImageRecord:
    """containerd's images.Image: a name and the descriptor it points at."""

    name: str
    digest: str  # of the target: an index or a manifest (the repo digest)
    media_type: str
    size: int
    manifest: str  # the platform manifest the node unpacked (== digest for a plain manifest)


class Ingest:
    """One blob being written: sha256 and size checked as the bytes arrive."""

    def __init__(self, store: ContentStore, *, digest: str, size: int) -> None:
        self.store = store
        self.digest = digest
        self.expected_size = size
        self.written = 0
        self._hash = hashlib.sha256()
        name = f"{digest.replace(':', '-')}.{secrets.token_hex(4)}"
        self.path = store.directory("ingest") / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            self._fd: int | None = os.open(self.path, flags, 0o644)
        except FileNotFoundError:
            store.directory("ingest", again=True)
            self._fd = os.open(self.path, flags, 0o644)

    def write(self, chunk: bytes | memoryview) -> None:
        self.write_many((chunk,))

    def write_many(self, chunks: Sequence[bytes | memoryview]) -> None:
        """Pieces received one after the other: each hashed, then all written with one
        writev (a system call per piece is a measurable part of pulling small blobs)."""
        assert self._fd is not None, "ingest already closed"
        views = [memoryview(chunk) for chunk in chunks]
        total = 0
        for view in views:
            self._hash.update(view)
            total += view.nbytes
        self._reserve(self.written + total)
        views = [view for view in views if view.nbytes]
        while views:
            done = os.writev(self._fd, views[:_IOV_MAX])
            while views and done >= views[0].nbytes:
                done -= views[0].nbytes
                views.pop(0)
            if done:
                views[0] = views[0][done:]
        self.written += total

    def _reserve(self, end: int) -> None:
        """Reserve the blocks ahead of the writes, a step at a time and never past the
        descriptor's size: ext4 then skips its per-page delayed allocation, which is a
        quarter or more of a write's CPU (and of a pull's, after sha256 and the socket).
        A blob shorter or longer than its descriptor fails its commit all the same, and a
        descriptor lying about its size cannot make a node reserve more than one step."""
        assert self._fd is not None
        step = 16 << 20
        if (self.expected_size >= 1 << 20 and end < self.expected_size
                and (self.written == 0 or self.written // step != end // step)):
            upto = min(self.expected_size, (end // step + 1) * step)
            with contextlib.suppress(OSError, AttributeError):  # best effort
                os.posix_fallocate(self._fd, self.written, upto - self.written)

    def commit(self) -> None:
        """Move the blob into the store, or raise CommitError (containerd's wording)."""
        self._close()
        ref = self.store.ref_key(self.digest)
        if self.expected_size >= 0 and self.written != self.expected_size:
            self.abort()
            raise CommitError(
                f'failed commit on ref "{ref}": unexpected commit size {self.written}, '
                f"expected {self.expected_size}: failed precondition"
            )
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self.digest:
            self.abort()
            raise CommitError(
                f'failed commit on ref "{ref}": unexpected commit digest {actual}, '
                f"expected {self.digest}: failed precondition"
            )
        target = self.store.blob_path(self.digest)
        self.store.directory("blobs", target.parent.name)
        try:
            os.replace(self.path, target)
        except FileNotFoundError:
            self.store.directory("blobs", target.parent.name, again=True)
            os.replace(self.path, target)

    def abort(self) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ContentStore:
    """One node's containerd content store and image records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._records: dict[str, ImageRecord] | None = None
        self._json: dict[str, dict[str, Any]] = {}  # parsed manifests by digest
        self._made: set[tuple[str, ...]] = set()  # content/ directories known to exist

    def directory(self, *parts: str, again: bool = False) -> Path:
        """content/<parts>, created once per store (not one mkdir per blob), or `again`
        when it was removed behind the store's back."""
        path = self.root.joinpath("content", *parts)
        if again or parts not in self._made:
            path.mkdir(parents=True, exist_ok=True)
            self._made.add(parts)
        return path

    # -- blobs -------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, _, hexpart = digest.partition(":")
        return self.root / "content" / "blobs" / algorithm / hexpart

    def has(self, digest: str, size: int = -1) -> bool:
        try:
            stat = self.blob_path(digest).stat()
        except OSError:
            return False
        return size < 0 or stat.st_size == size

    def ingest(self, digest: str, size: int) -> Ingest:
        return Ingest(self, digest=digest, size=size)

    def put(self, digest: str, data: bytes) -> None:
        """Commit a small blob held in memory (a manifest): verified like any other."""
        if self.has(digest, len(data)):
            return
        writer = self.ingest(digest, len(data))
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        writer.commit()

    def read_json(self, digest: str) -> dict[str, Any] | None:
        cached = self._json.get(digest)
        if cached is not None and self.has(digest):
            return cached
        try:
            parsed = json.loads(self.blob_path(digest).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(parsed, dict):
            return None
        self._json[digest] = parsed
        return parsed

    @staticmethod
    def ref_key(digest: str, media_type: str = "") -> str:
        """remotes.MakeRefKey's shape, as containerd names an ingest in its errors."""
        if "index" in media_type or "list" in media_type:
            kind = "index"
        elif "manifest" in media_type:
            kind = "manifest"
        elif "config" in media_type:
            kind = "config"
        else:
            kind = "layer"
        return f"{kind}-{digest}"

    # -- images ------------------------------------------------------------------------------

    @property
    def _index_path(self) -> Path:
        return self.root / "images.json"

    def records(self) -> dict[str, ImageRecord]:
        if self._records is None:
            self._records = {}
            try:
                raw = json.loads(self._index_path.read_text())
            except (OSError, ValueError):
                raw = {}
            for name, entry in (raw if isinstance(raw, dict) else {}).items():
                try:
                    self._records[name] = ImageRecord(name=name, **entry)
                except TypeError:
                    continue
        return self._records

    def record(self, names: list[str], *, digest: str, media_type: str, size: int,
               manifest: str) -> None:
        records = self.records()
        for name in names:
            records[name] = ImageRecord(name, digest, media_type, size, manifest)
        self._save()

    def _save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({
            name: {"digest": r.digest, "media_type": r.media_type, "size": r.size,
                   "manifest": r.manifest}
            for name, r in sorted(self.records().items())
        }, indent=1))
        os.replace(tmp, self._index_path)

    def present(self, name: str) -> ImageRecord | None:
        """The record for `name` if the image is whole on this node: its target, the platform
        manifest, the config and every layer are in the content store."""
        record = self.records().get(name)
        if record is None or not self.has(record.digest):
            return None
        if record.manifest != record.digest and not self.has(record.manifest):
            return None
        manifest = self.read_json(record.manifest)
        if manifest is None:
            return None
        for descriptor in blobs_of(manifest):
            if not self.has(str(descriptor.get("digest")), int(descriptor.get("size", -1))):
                return None
        return record

    def images(self) -> Iterator[tuple[list[str], int]]:
        """(names, size) per image present, as the CRI's ListImages feeds node status:
        repo digests and repo tags of one target together."""
        by_target: dict[str, tuple[list[str], int]] = {}
        for name, record in sorted(self.records().items()):
            if self.present(name) is None:
                continue
            names, _ = by_target.setdefault(record.digest, ([], record.size))
            names.append(name)
        for names, size in by_target.values():
            names.sort(key=lambda n: ("@" not in n, n))  # RepoDigests first, then RepoTags
            yield names, size


def blobs_of(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The descriptors a manifest needs fetched: its config, then its layers."""
    out: list[dict[str, Any]] = []
    config = manifest.get("config")
    if isinstance(config, dict):
        out.append(config)
    out.extend(layer for layer in manifest.get("layers") or [] if isinstance(layer, dict))
    return out

