"""The webhook's local view of `clusterregistry-artifacts`, for the IfAvailable policy.

IfAvailable rewrites an image only when the local registry already holds it, which
the reconciler records per Artifact in the KV bucket `clusterregistry-artifacts`
(key: the Artifact name; value: schemas.ArtifactRecord). An admission must never
wait on NATS (kube-apiserver gives a webhook 10 s at most, and every pod creation
in the cluster waits with it), so the webhook keeps the bucket in memory through
a KV watch and answers from that copy: a dictionary lookup.

The copy is trusted only while it is `synced`: after the watch's initial values
have all arrived (nats-py's None marker) and while the connection is up. When the
connection drops, the copy may miss deletions and phase changes, so it stops
being trusted, the webhook applies its configured fallback, and on reconnection
a new watch rebuilds the copy from scratch and swaps it in whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import msgspec

from clusterregistry import references, schemas, subjects
from clusterregistry.bus.connecting import Bus, connect
from clusterregistry.bus.keyvalues import watch_bucket
from clusterregistry.errors import PermanentError, RetryableError
from clusterregistry.references import InvalidReferenceError
from clusterregistry.runtime.lifecycle import sleep_unless_stopped
from clusterregistry.webhook.metrics import WebhookMetrics
from clusterregistry.webhook.mutation import AVAILABLE_PHASE

log = logging.getLogger(__name__)


class _Snapshot:
    """Records by key, and the canonical sources with an Available record."""

    def __init__(self) -> None:
        self.by_key: dict[str, tuple[str, str]] = {}  # key -> (canonical source, phase)
        self.available: dict[str, set[str]] = {}  # canonical source -> keys Available

    def put(self, key: str, value: bytes) -> None:
        self.delete(key)
        try:
            record = schemas.artifact_record_decoder.decode(value)
            source = references.canonical(record.source)
        except (msgspec.DecodeError, InvalidReferenceError) as exc:
            log.warning("ignoring artifact record %s: %s", key, exc)
            return
        self.by_key[key] = (source, record.phase)
        if record.phase == AVAILABLE_PHASE:
            self.available.setdefault(source, set()).add(key)

    def delete(self, key: str) -> None:
        old = self.by_key.pop(key, None)
        if old is None:
            return
        keys = self.available.get(old[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self.available[old[0]]


class ArtifactView:
    """The KV bucket's records in memory, kept current by a watch; see the module docstring."""

    def __init__(self, servers: Sequence[str], *, metrics: WebhookMetrics,
                 retry_seconds: float = 1.0, bucket: str = subjects.ARTIFACTS_BUCKET) -> None:
        self._servers = list(servers)
        self._metrics = metrics
        self._retry_seconds = retry_seconds
        self._bucket = bucket
        self._snapshot = _Snapshot()
        self._synced = False
        self.bus: Bus | None = None
        # read at scrape time, so they say what an admission would see at that moment
        metrics.artifacts_synced.set_function(lambda: 1.0 if self.synced else 0.0)
        metrics.artifacts_known.set_function(lambda: float(self.size))

    @property
    def synced(self) -> bool:
        return self._synced and self.bus is not None and self.bus.connected

    def phase(self, canonical: str) -> str | None:
        if canonical in self._snapshot.available:
            return AVAILABLE_PHASE
        return None

    @property
    def size(self) -> int:
        return len(self._snapshot.by_key)

    def _set_synced(self, value: bool) -> None:
        self._synced = value

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, watch, rebuild after every disconnection; until `stop`."""
        try:
            while not stop.is_set():
                if self.bus is None:
                    try:
                        self.bus = await connect(self._servers, name="clusterregistry-webhook",
                                                 first_connect_timeout=self._retry_seconds * 5)
                    except (RetryableError, PermanentError) as exc:
                        # refused credentials too: the webhook keeps admitting with the
                        # fallback, and a fixed Secret is picked up by the next attempt
                        log.warning("artifact view: %s; the fallback applies", exc)
                        await sleep_unless_stopped(stop, self._retry_seconds)
                        continue
                try:
                    await self._watch(self.bus, stop)
                except RetryableError as exc:
                    log.warning("artifact view: %s; the fallback applies until the view is "
                                "rebuilt", exc)
                finally:
                    self._set_synced(False)
                await sleep_unless_stopped(stop, self._retry_seconds)
        finally:
            self._set_synced(False)
            if self.bus is not None:
                await self.bus.close(drain_timeout=1.0)
                self.bus = None

    async def _watch(self, bus: Bus, stop: asyncio.Event) -> None:
        if not bus.connected:
            return
        fresh = _Snapshot()
        synced = False
        async with contextlib.aclosing(watch_bucket(bus, self._bucket, stop=stop,
                                                    poll=self._retry_seconds)) as changes:
            async for change in changes:
                if change is None:  # the initial values are all in: swap them in whole
                    self._snapshot = fresh
                    synced = True
                    self._set_synced(True)
                    log.info("artifact view: in sync with %d records", self.size)
                    continue
                target = self._snapshot if synced else fresh
                if change.value is None:
                    target.delete(change.key)
                else:
                    target.put(change.key, change.value)
