"""The object store: what etcd plus the watch cache are to kube-apiserver.

One global, monotonically increasing resourceVersion orders every write.
Each resource keeps its objects sorted by key (namespace/name, etcd's key
order, which is the order lists come back in) and a bounded history of
events. That history is what makes two Kubernetes behaviours possible:

* a watch may resume from any resourceVersion still in the history, and one
  older than the history ("compacted") fails with 410 Gone, exactly as a
  watch against etcd after compaction does;
* a paginated list serves every page from the snapshot of its first page
  (kube reads them from etcd at that revision), and a continue token whose
  revision has been compacted fails with 410 Expired.

Objects in the store are never mutated: a write stores a new dict, so a
reader may hand a stored object to an encoder without copying it.

Resources are stored by `Resource.storage_key`: every version of a resource,
and a resource that cohabits with another (events.k8s.io Events with core
Events), read and write one bucket. A watch through such a view carries a
transform that turns each stored object into the form its API serves.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import builtins
import collections
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from kubesim import statuses
from kubesim.resources import Resource
from kubesim.selectors import FieldSelector, LabelSelector

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects
Obj = dict[str, Any]
Transform = Callable[[Obj], Obj]

_encoder = msgspec.json.Encoder()


def deep_copy(obj: Obj) -> Obj:
    """A deep copy of a JSON object; msgspec's round trip beats copy.deepcopy by far."""
    copied: Obj = msgspec.json.decode(_encoder.encode(obj))
    return copied


def key_of(obj: Obj) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


@dataclass(slots=True)
class Change:
    """One committed write: the history entry and what watchers receive."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: Key
    object: Obj
    previous: Obj | None


@dataclass(slots=True)
class Event:
    """A watch event as one watcher sees it (selectors can turn MODIFIED into ADDED/DELETED)."""

    type: str
    object: Obj
    _encoded: dict[str, bytes] | None = field(default=None, repr=False)

    def __iter__(self) -> Iterator[Any]:  # lets callers unpack `etype, obj = event`
        return iter((self.type, self.object))

    def encode(self, api_version: str | None = None) -> bytes:
        """The event as one line of a watch stream, cached per apiVersion."""
        cache_key = api_version or ""
        if self._encoded is None:
            self._encoded = {}
        line = self._encoded.get(cache_key)
        if line is None:
            obj = self.object
            if api_version and obj.get("apiVersion") != api_version:
                obj = {**obj, "apiVersion": api_version}
            line = _encoder.encode({"type": self.type, "object": obj}) + b"\n"
            self._encoded[cache_key] = line
        return line


class Watch:
    """One watcher's queue. The store pushes; the consumer iterates.

    A watcher that falls more than `max_pending` events behind is ended, as
    kube-apiserver's cacher ends a watcher whose buffer stays full: the client
    resumes from the last resourceVersion it saw (or relists on 410).
    """

    def __init__(
        self,
        *,
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
        max_pending: int,
        on_close: Callable[[Watch], None],
        view: str = "",
        transform: Transform | None = None,
    ) -> None:
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self._pending: collections.deque[Event] = collections.deque()
        self._wakeup = asyncio.Event()
        self._max_pending = max_pending
        self._on_close = on_close
        self.closed = False
        self.overflowed = False
        self.last_rv = 0
        # selectors match the stored form; what is queued is the form of the watched API
        self.view = view
        self.transform = transform

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        if self.labels is not None and not self.labels.matches(obj["metadata"].get("labels")):
            return False
        return self.fields is None or self.fields.matches(obj)

    def event(self, etype: str, obj: Obj) -> Event:
        return Event(etype, obj if self.transform is None else self.transform(obj))

    def offer(self, change: Change, shared: dict[tuple[str, str], Event]) -> None:
        if self.closed:
            return
        now = self.matches(change.object)
        if change.type == "MODIFIED" and (self.labels is not None or self.fields is not None):
            before = self.matches(change.previous)
            if now and not before:
                etype = "ADDED"
            elif before and not now:
                etype = "DELETED"
            elif now:
                etype = "MODIFIED"
            else:
                return
        elif now:
            etype = change.type
        else:
            return
        # one Event (and one encoding) per type and view, shared by the watchers of a change
        event = shared.get((etype, self.view))
        if event is None:
            event = shared[(etype, self.view)] = self.event(etype, change.object)
        self.push(event, change.rv)

    def push(self, event: Event, rv: int) -> None:
        if len(self._pending) >= self._max_pending:
            self.overflowed = True
            self.close()
            return
        self._pending.append(event)
        self.last_rv = rv
        self._wakeup.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._wakeup.set()
            self._on_close(self)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def drain(self, limit: int | None = None) -> list[Event]:
        """What is queued now, at most `limit` events, without waiting (for writers that
        batch)."""
        if limit is None or len(self._pending) <= limit:
            events = list(self._pending)
            self._pending.clear()
            self._wakeup.clear()
            return events
        return [self._pending.popleft() for _ in range(limit)]

    async def wait(self, timeout: float | None) -> bool:
        """Wait until an event is queued or the watch closed; False on timeout."""
        if self._pending or self.closed:
            return True
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            if self._pending:
                yield self._pending.popleft()
                continue
            if self.closed:
                return
            self._wakeup.clear()
            await self._wakeup.wait()


class Bucket:
    """All objects of one resource (all versions of it share one bucket, as in etcd)."""

    def __init__(self, resource: Resource, *, history: int) -> None:
        self.resource = resource
        self.objects: dict[Key, Obj] = {}
        self.keys: list[Key] = []  # sorted
        self.history: collections.deque[Change] = collections.deque()
        self.history_limit = history
        # the rv of the newest change dropped from history: resuming at or after it is safe
        self.compacted_rv = 0
        self.watchers: list[Watch] = []

    def record(self, change: Change) -> None:
        self.history.append(change)
        if len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv
        if self.watchers:
            shared: dict[tuple[str, str], Event] = {}
            for watcher in list(self.watchers):
                watcher.offer(change, shared)

    def snapshot_object(self, key: Key, rv: int) -> Obj | None:
        """The object at `key` as it was at resourceVersion `rv` (history must cover rv)."""
        current = self.objects.get(key)
        if (current is None or int(current["metadata"]["resourceVersion"]) <= rv) and not (
            self.history and self.history[-1].rv > rv
        ):
            return current
        state = current
        for change in reversed(self.history):
            if change.rv <= rv:
                break
            if change.key == key:
                state = change.previous
        return state


def encode_continue(rv: int, start_after: Key) -> str:
    raw = _encoder.encode({"v": "kubesim/v1", "rv": rv, "start": list(start_after)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, Key]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = msgspec.json.decode(base64.urlsafe_b64decode(padded))
        rv = int(data["rv"])
        namespace, name = data["start"]
        return rv, (str(namespace), str(name))
    except (ValueError, KeyError, TypeError, msgspec.DecodeError) as exc:
        raise statuses.bad_request(f"continue key is not valid: {exc}") from exc


class Store:
    """Objects of every resource, the global resourceVersion, histories and watchers."""

    def __init__(self, *, history: int = 100_000, watch_queue: int = 250_000) -> None:
        self.rv = 0
        self._buckets: dict[str, Bucket] = {}
        self._history = history
        self._watch_queue = watch_queue

    def bucket(self, resource: Resource) -> Bucket:
        bucket = self._buckets.get(resource.storage_key)
        if bucket is None:
            bucket = self._buckets[resource.storage_key] = Bucket(
                resource, history=self._history
            )
        return bucket

    def drop(self, resource: Resource) -> None:
        """Forget a resource entirely (its CRD was deleted); its watchers end."""
        bucket = self._buckets.pop(resource.storage_key, None)
        if bucket is not None:
            for watcher in list(bucket.watchers):
                watcher.close()

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def get(self, resource: Resource, key: Key) -> Obj | None:
        return self.bucket(resource).objects.get(key)

    def commit(self, resource: Resource, *, etype: str, obj: Obj, rv: int) -> Change:
        """Store `obj` (already stamped with `rv`) or remove it for DELETED; notify watchers."""
        bucket = self.bucket(resource)
        key = key_of(obj)
        previous = bucket.objects.get(key)
        if etype == "DELETED":
            bucket.objects.pop(key, None)
            index = bisect.bisect_left(bucket.keys, key)
            if index < len(bucket.keys) and bucket.keys[index] == key:
                del bucket.keys[index]
        else:
            if previous is None:
                bisect.insort(bucket.keys, key)
            bucket.objects[key] = obj
        change = Change(rv=rv, type=etype, key=key, object=obj, previous=previous)
        bucket.record(change)
        return change

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
        limit: int,
        continue_token: str | None,
    ) -> tuple[builtins.list[Obj], int, str | None, int | None]:
        """(items, resourceVersion, continue token, remainingItemCount)."""
        bucket = self.bucket(resource)
        if continue_token:
            snapshot_rv, start_after = decode_continue(continue_token)
            if snapshot_rv < bucket.compacted_rv:
                raise statuses.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use "
                    "the continue token in this response to retrieve the remainder of the "
                    "results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time "
                    "the first chunk was returned and now may show up in the list."
                )
        else:
            snapshot_rv, start_after = self.rv, ("", "") if namespace is None else (namespace, "")
        keys = self._keys_at(bucket, snapshot_rv)
        start = bisect.bisect_right(keys, start_after) if continue_token else (
            bisect.bisect_left(keys, start_after)
        )
        items: builtins.list[Obj] = []
        index = start
        total = len(keys)
        while index < total:
            key = keys[index]
            index += 1
            if namespace is not None and key[0] != namespace:
                break  # keys are sorted by namespace first: past the namespace, done
            obj = bucket.snapshot_object(key, snapshot_rv)
            if obj is None:
                continue
            if labels is not None and not labels.matches(obj["metadata"].get("labels")):
                continue
            if fields is not None and not fields.matches(obj):
                continue
            items.append(obj)
            if limit and len(items) >= limit:
                break
        token: str | None = None
        remaining: int | None = None
        if limit and len(items) >= limit and index < total:
            more = keys[index:]
            if namespace is not None:
                more = [k for k in more if k[0] == namespace]
            if more:
                token = encode_continue(snapshot_rv, key_of(items[-1]))
                if labels is None and fields is None:
                    remaining = len(more)
        return items, snapshot_rv, token, remaining

    def _keys_at(self, bucket: Bucket, rv: int) -> builtins.list[Key]:
        """Sorted keys that existed at `rv`: today's keys, adjusted by the history after rv."""
        if not bucket.history or bucket.history[-1].rv <= rv:
            return bucket.keys
        added: set[Key] = set()
        removed: set[Key] = set()
        for change in reversed(bucket.history):
            if change.rv <= rv:
                break
            if change.previous is None:  # created after rv
                added.add(change.key)
                removed.discard(change.key)
            elif change.type == "DELETED":  # existed at rv
                removed.add(change.key)
                added.discard(change.key)
        keys = [k for k in bucket.keys if k not in added]
        for key in removed:
            if key not in bucket.objects:
                bisect.insort(keys, key)
        return keys

    def watch(
        self,
        resource: Resource,
        *,
        namespace: str | None,
        labels: LabelSelector | None,
        fields: FieldSelector | None,
        resource_version: str | None,
        send_initial: bool,
        transform: Transform | None = None,
    ) -> Watch:
        """Start a watch. Initial events are synthetic ADDED events of the current state
        (rv unset or "0"), or the history after the given resourceVersion. `transform` turns
        stored objects into the watched API's form (a resource that cohabits with another)."""
        bucket = self.bucket(resource)

        def unregister(watch: Watch) -> None:
            if watch in bucket.watchers:
                bucket.watchers.remove(watch)

        watch = Watch(
            namespace=namespace,
            labels=labels,
            fields=fields,
            max_pending=self._watch_queue,
            on_close=unregister,
            view=resource.group_resource if transform is not None else "",
            transform=transform,
        )
        if send_initial:
            for key in bucket.keys:
                obj = bucket.objects[key]
                if watch.matches(obj):
                    watch.push(watch.event("ADDED", obj), self.rv)
            watch.last_rv = self.rv
        else:
            start = _parse_rv(resource_version)
            if start < bucket.compacted_rv:
                oldest = bucket.history[0].rv if bucket.history else self.rv
                # kube-apiserver's wording; clients match on the 410 code and reason Expired
                raise statuses.gone(f"too old resource version: {start} ({oldest - 1})")
            for change in bucket.history:
                if change.rv > start:
                    watch.offer(change, {})
            watch.last_rv = max(start, watch.last_rv)
        bucket.watchers.append(watch)
        return watch


def _parse_rv(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError as exc:
        raise statuses.bad_request(f"invalid resource version: {value!r}") from exc
