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

import msgspec
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from clusterregistry import subjects
from clusterregistry.errors import RetryableError
from clusterregistry.schemas import BlobLocation, blob_location_decoder, encode

log = logging.getLogger(__name__)


def key(digest: str) -> str:
    """`sha256.<hex>`: a KV key cannot hold `:`."""
    return digest.replace(":", ".", 1)


async def ensure_bucket(js: JetStreamContext, *, ttl_seconds: float,
                        replicas: int = 1) -> KeyValue:
    try:
        try:
            return await js.key_value(subjects.MIRROR_BLOBS_BUCKET)
        except BucketNotFoundError:
            return await js.create_key_value(KeyValueConfig(
                bucket=subjects.MIRROR_BLOBS_BUCKET, history=1, ttl=ttl_seconds,
                replicas=replicas, storage=StorageType.FILE))
    except Exception as exc:
        raise RetryableError(f"key-value bucket {subjects.MIRROR_BLOBS_BUCKET}: {exc}") from exc


class KvBlobLedger:
    """The `oci.copying.BlobLedger` of a mirror worker; failures of NATS degrade to uploads."""

    def __init__(self, kv: KeyValue, *, holder: str, claim_seconds: float = 300.0) -> None:
        self.kv = kv
        self.holder = holder
        self.claim_seconds = claim_seconds

    async def _get(self, digest: str) -> tuple[BlobLocation, int] | None:
        try:
            entry = await self.kv.get(key(digest))
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        try:
            return blob_location_decoder.decode(entry.value), int(entry.revision or 0)
        except msgspec.DecodeError:
            return None

    async def lookup(self, digest: str) -> str | None:
        try:
            found = await self._get(digest)
        except Exception as exc:  # the ledger is a hint: no NATS means no mount
            log.debug("blob ledger lookup failed: %s", exc)
            return None
        if found is None or found[0].state != "stored":
            return None
        return found[0].repository or None

    async def claim(self, digest: str) -> bool:
        mine = encode(BlobLocation(state="claimed", holder=self.holder, updated=time.time()))
        try:
            try:
                await self.kv.create(key(digest), mine)
                return True
            except KeyWrongLastSequenceError:
                pass
            found = await self._get(digest)
            if found is None:
                return False  # deleted meanwhile: look again
            location, revision = found
            if location.state == "claimed" and (
                time.time() - location.updated > self.claim_seconds
            ):
                # the claimant died or stalls: take its claim over (one taker wins)
                await self.kv.update(key(digest), mine, last=revision)
                return True
            return False
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            log.debug("blob ledger claim failed: %s", exc)
            return True  # without the ledger, upload: correct, if not frugal

    async def record(self, digest: str, repository: str) -> None:
        stored = BlobLocation(state="stored", repository=repository, holder=self.holder,
                              updated=time.time())
        try:
            await self.kv.put(key(digest), encode(stored))
        except Exception as exc:
            log.debug("blob ledger record failed: %s", exc)

    async def release(self, digest: str) -> None:
        try:
            found = await self._get(digest)
            if found is not None and found[0].state == "claimed" and (
                found[0].holder == self.holder
            ):
                await self.kv.delete(key(digest), last=found[1])
        except Exception as exc:
            log.debug("blob ledger release failed: %s", exc)
