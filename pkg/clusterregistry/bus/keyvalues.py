"""Typed key-value records with optimistic concurrency: every write names the revision it read.

Several processes write the same keys (two trackers, two reconcilers, GC),
so a read-modify-write must not overwrite what another process wrote in
between. JetStream KV offers that through the expected-last-subject-sequence
header: a write or delete based on revision N fails unless the key is still
at N (revision 0: the key has never been written). Here that failure is a
ConflictError: re-read, decide again.

A deleted key keeps a delete marker (a tombstone) until it is purged; a read
reports it as `deleted`, with the marker's revision, so a writer can tell an
owner that is gone from one never seen, and can still recreate the key
conditionally on the marker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.translating import translating
from clusterregistry.errors import (
    ClusterRegistryError,
    ConflictError,
    NotFoundError,
    RetryableError,
    TimedOutError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Bucket:
    """A key-value bucket as opened on a connection (`streams.ensure_bucket`): what a
    service hands to `Records`, without touching nats-py's KeyValue itself."""

    bus: Bus
    name: str
    _kv: KeyValue

    # JetStream's key-value convention (ADR-8), which every client follows: bucket B is
    # the stream KV_B, and key K is stored on subject $KV.B.K
    @property
    def stream(self) -> str:
        return f"KV_{self.name}"

    @property
    def prefix(self) -> str:
        return f"$KV.{self.name}."


@dataclass(frozen=True, slots=True)
class Versioned(Generic[T]):
    """A key as read: its value (None when absent, deleted or unreadable) and revision."""

    value: T | None
    revision: int = 0  # 0: never written (or purged)
    deleted: bool = False  # a delete marker: the key existed and was deleted


class Records(Generic[T]):
    """One bucket of msgspec-encoded records of one type.

    Failures are the project's errors (`translating`): ConflictError when a write or
    delete finds another revision than the one it names, RetryableError when NATS cannot
    answer now, PermanentError when JetStream refuses the request itself.
    """

    def __init__(self, bucket: Bucket, decode: Callable[[bytes], T]) -> None:
        self._bucket = bucket
        self._kv = bucket._kv
        self._decode = decode
        self.name = bucket.name

    def _value(self, key: str, raw: bytes | None) -> T | None:
        if not raw:
            return None
        try:
            return self._decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # unreadable: treated as absent, and overwritten (conditionally) by the next write
            log.warning("%s: key %s holds an unreadable value (%s); ignoring it", self.name,
                        key, exc)
            return None

    def versioned(self, change: Change) -> Versioned[T]:
        """A watched change as a read would give it (an unreadable value: absent)."""
        return Versioned(self._value(change.key, change.value), change.revision,
                         deleted=change.value is None)

    async def read(self, key: str) -> Versioned[T]:
        try:
            with translating(f"{self.name}: reading {key}"):
                entry = await self._kv.get(key)
        except NotFoundError as exc:
            # nats-py's KeyNotFoundError carries the delete or purge marker, if there is one
            marker = getattr(exc.__cause__, "entry", None)
            if marker is not None:
                return Versioned(None, marker.revision or 0, deleted=True)
            return Versioned(None)
        return Versioned(self._value(key, entry.value), entry.revision or 0)

    async def write(self, key: str, record: msgspec.Struct, *, revision: int) -> int:
        """Store `record` if the key is still at `revision`; the new revision."""
        payload = msgspec.json.encode(record)
        with translating(f"{self.name}: writing {key} at revision {revision}"):
            return await self._kv.update(key, payload, last=revision)

    async def create(self, key: str, record: msgspec.Struct) -> int:
        """Store `record` only if the key holds no value: never written, or deleted (its
        tombstone's revision is then the one expected). ConflictError when it holds one,
        or when another writer got in first; the new revision otherwise."""
        try:
            return await self.write(key, record, revision=0)
        except ConflictError:
            current = await self.read(key)
            if not current.deleted:
                raise
        return await self.write(key, record, revision=current.revision)

    async def put(self, key: str, record: msgspec.Struct) -> int:
        """Store `record` whatever the key holds (the last writer wins); the new revision.

        Only for values that are hints, which no writer decides from: everything else
        goes through `write` with the revision it read.
        """
        with translating(f"{self.name}: writing {key}"):
            return await self._kv.put(key, msgspec.json.encode(record))

    async def delete(self, key: str, *, revision: int) -> None:
        """Delete (leaving a tombstone) if the key is still at `revision`."""
        with translating(f"{self.name}: deleting {key} at revision {revision}"):
            # nats-py sends no expectation for revision 0; a key never written needs none
            await self._kv.delete(key, last=revision or None)

    async def snapshot(self, *, page: int = 1000) -> dict[str, Versioned[T]]:
        """Every key's current state, tombstones included, in one pass.

        An ephemeral pull consumer delivering the last message per key, deleted when done
        (a KV watcher's ordered consumer would linger until its inactivity threshold, and
        frequent snapshots would pile them up against the server's consumer limit).
        """
        js = self._bucket.bus._js
        stream = self._bucket.stream
        prefix = self._bucket.prefix
        what = f"{self.name}: reading every key"
        out: dict[str, Versioned[T]] = {}
        with translating(what):
            info = await js.add_consumer(stream, ConsumerConfig(
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT, ack_policy=AckPolicy.NONE,
                filter_subject=f"{prefix}>", inactive_threshold=60.0, mem_storage=True,
                num_replicas=1))
        try:
            if info.num_pending:
                with translating(what):
                    sub = await js.pull_subscribe_bind(info.name, stream=stream)
                try:
                    await self._drain(sub, out, prefix=prefix, page=page, what=what)
                finally:
                    with contextlib.suppress(ClusterRegistryError), translating(what):
                        await sub.unsubscribe()
        finally:
            # best effort: the server removes it after its inactive threshold anyway
            with contextlib.suppress(ClusterRegistryError), translating(what):
                await js.delete_consumer(stream, info.name)
        return out

    async def _drain(self, sub: Any, out: dict[str, Versioned[T]], *, prefix: str,
                     page: int, what: str, deadline: float = 60.0) -> None:
        # Until the consumer has nothing pending. Not a count taken at its creation: a key
        # written meanwhile replaces its old message (one per key), so fewer may come.
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        while loop.time() < give_up:
            try:
                with translating(what):
                    messages = await sub.fetch(page, timeout=1.0)
            except TimedOutError:
                messages = []
            for msg in messages:
                key = msg.subject[len(prefix):]
                revision = msg.metadata.sequence.stream
                if (msg.headers or {}).get(KV_OP) in (KV_DEL, KV_PURGE):
                    out[key] = Versioned(None, revision, deleted=True)
                else:
                    out[key] = Versioned(self._value(key, msg.data), revision)
            if messages and messages[-1].metadata.num_pending == 0:
                return
            if not messages:
                with translating(what):
                    if (await sub.consumer_info()).num_pending == 0:
                        return
        raise RetryableError(f"{self.name}: reading every key took over {deadline:.0f}s")

    async def purge_tombstones(self, *, older_than: float) -> None:
        """Drop delete markers older than `older_than` seconds (they only guard late events)."""
        with translating(f"{self.name}: purging tombstones"):
            await self._kv.purge_deletes(olderthan=max(1, int(older_than)))


async def open_records(bus: Bus, name: str, decode: Callable[[bytes], T]) -> Records[T] | None:
    """The records of an existing bucket, or None when there is no such bucket (nobody has
    written one yet); RetryableError when NATS cannot say. Creates nothing: for readers
    whose reading must not decide a writer's bucket settings (replicas, history)."""
    try:
        with translating(f"key-value bucket {name}"):
            kv = await bus._js.key_value(name)
    except NotFoundError:
        return None
    return Records(Bucket(bus, name, kv), decode)


@dataclass(frozen=True, slots=True)
class Change:
    """One key as a bucket watch delivers it: its new value, or None when deleted or purged."""

    key: str
    value: bytes | None
    revision: int = 0  # the change's sequence in the bucket: orders it against a snapshot


async def watch_bucket(bus: Bus, bucket: str, *, stop: asyncio.Event,
                       poll: float) -> AsyncGenerator[Change | None, None]:
    """Every key of `bucket`, then None once the initial values are all in, then every
    change; until `stop` is set (looked at every `poll` seconds).

    `RetryableError` when the bucket cannot be watched or NATS goes away: a view built
    from this watch may then miss deletions and must be rebuilt from a new watch. Use
    it under `contextlib.aclosing`, so the server-side consumer is removed at once.
    """
    what = f"watch of {bucket}"
    try:
        with translating(what):
            kv = await bus._js.key_value(bucket)
            watcher = await kv.watchall()
    except NotFoundError as exc:
        # no bucket yet: its writer (the reconciler, the tracker) creates it at start
        raise RetryableError(str(exc)) from exc.__cause__
    try:
        while not stop.is_set():
            try:
                with translating(what):
                    entry = await watcher.updates(timeout=poll)  # type: ignore[no-untyped-call]
            except TimedOutError:
                # nothing changed, or nothing can arrive: only the connection tells which
                if not bus.connected:
                    raise RetryableError(f"{what}: NATS disconnected") from None
                continue
            if entry is None:  # nats-py's marker: the initial values are all delivered
                yield None
                continue
            deleted = entry.operation in (KV_DEL, KV_PURGE) or not entry.value
            yield Change(entry.key, None if deleted else entry.value, entry.revision or 0)
    finally:
        with contextlib.suppress(ClusterRegistryError), translating(what):
            await watcher.stop()  # type: ignore[no-untyped-call]
