"""Where the local registry holds each blob, shared by all mirror workers through NATS KV.

Two workers copying images that share a base layer into different repositories
would both upload it: distribution stores a blob once, but only after receiving
it twice. The ledger lets the first worker *claim* a blob (KV create: exactly
one wins), the others wait for the claim to become a *stored* location and then
mount it from there with one POST. Everything here is a hint: a stale location
makes a mount fail and the copier uploads; a claim whose holder died is taken
over after `claim_seconds`; the bucket's TTL forgets old entries.
"""

from __future__ import annotations

import logging
import time

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Records
from clusterregistry.bus.streams import ensure_bucket as ensure_kv_bucket
from clusterregistry.errors import ConflictError, RetryableError
from clusterregistry.schemas import BlobLocation, blob_location_decoder

log = logging.getLogger(__name__)


def key(digest: str) -> str:
    """`sha256.<hex>`: a KV key cannot hold `:`."""
    return digest.replace(":", ".", 1)


async def ensure_bucket(bus: Bus, *, ttl_seconds: float,
                        replicas: int = 1) -> Records[BlobLocation]:
    bucket = await ensure_kv_bucket(bus, name=subjects.MIRROR_BLOBS_BUCKET,
                                    replicas=replicas, ttl=ttl_seconds)
    return Records(bucket, blob_location_decoder.decode)


class KvBlobLedger:
    """The `oci.copying.BlobLedger` of a mirror worker; failures of NATS degrade to uploads."""

    def __init__(self, records: Records[BlobLocation], *, holder: str,
                 claim_seconds: float = 300.0) -> None:
        self.records = records
        self.holder = holder
        self.claim_seconds = claim_seconds

    async def _get(self, digest: str) -> tuple[BlobLocation, int] | None:
        """The location and its revision; None when absent, deleted or unreadable."""
        found = await self.records.read(key(digest))
        if found.value is None:
            return None
        return found.value, found.revision

    async def lookup(self, digest: str) -> str | None:
        try:
            found = await self._get(digest)
        except RetryableError as exc:  # the ledger is a hint: no NATS means no mount
            log.debug("blob ledger lookup failed: %s", exc)
            return None
        if found is None or found[0].state != "stored":
            return None
        return found[0].repository or None

    async def claim(self, digest: str) -> bool:
        mine = BlobLocation(state="claimed", holder=self.holder, updated=time.time())
        try:
            try:
                await self.records.create(key(digest), mine)
                return True
            except ConflictError:
                pass
            found = await self._get(digest)
            if found is None:
                return False  # deleted meanwhile: look again
            location, revision = found
            if location.state == "claimed" and (
                time.time() - location.updated > self.claim_seconds
            ):
                # the claimant died or stalls: take its claim over (one taker wins)
                await self.records.write(key(digest), mine, revision=revision)
                return True
            return False
        except ConflictError:
            return False
        except RetryableError as exc:
            log.debug("blob ledger claim failed: %s", exc)
            return True  # without the ledger, upload: correct, if not frugal

    async def record(self, digest: str, repository: str) -> None:
        stored = BlobLocation(state="stored", repository=repository, holder=self.holder,
                              updated=time.time())
        try:
            await self.records.put(key(digest), stored)
        except RetryableError as exc:
            log.debug("blob ledger record failed: %s", exc)

    async def release(self, digest: str) -> None:
        try:
            found = await self._get(digest)
            if found is not None and found[0].state == "claimed" and (
                found[0].holder == self.holder
            ):
                await self.records.delete(key(digest), revision=found[1])
        except RetryableError as exc:  # a conflict too: someone else's claim now
            log.debug("blob ledger release failed: %s", exc)
