"""Which registry front fetches a blob or manifest from a source, agreed across replicas.

Kubelets on many nodes pull the same new image at once, and a Service spreads
them over the front's replicas; each replica coalesces its own clients in
memory, and this bucket makes the replicas agree on one fetch per blob: the
first to *create* a key wins (a KV create is a compare-and-set on an empty
key, so exactly one wins however many race), and the others stream from the
winner's spool at the `peer` URL it recorded.

A claim is a promise that can break: its holder renews it every third of
`stale_seconds`, and a claim not renewed for `stale_seconds` is taken over with
a revision-checked write (one taker wins). When NATS cannot be reached the
front fetches on its own: one extra source fetch, never a failed pull.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

from clusterregistry import subjects
from clusterregistry.bus.connecting import Bus
from clusterregistry.bus.keyvalues import Records
from clusterregistry.bus.streams import ensure_bucket
from clusterregistry.errors import ConflictError, RetryableError
from clusterregistry.schemas import FlightClaim, flight_claim_decoder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claimed:
    """This replica holds the flight (at `revision`)."""

    revision: int


@dataclass(frozen=True)
class Elsewhere:
    """Another replica holds the flight, or has stored the blob already."""

    claim: FlightClaim


@dataclass(frozen=True)
class Unknown:
    """NATS did not answer: fetch alone."""

    reason: str


Outcome = Claimed | Elsewhere | Unknown


async def ensure(bus: Bus, *, ttl_seconds: float, replicas: int = 1) -> Records[FlightClaim]:
    bucket = await ensure_bucket(bus, name=subjects.FRONT_FLIGHTS_BUCKET, replicas=replicas,
                                 ttl=ttl_seconds)
    return Records(bucket, flight_claim_decoder.decode)


class Flights:
    """The claims of one front replica (`holder`, reachable by its peers at `peer`)."""

    def __init__(self, records: Records[FlightClaim], *, holder: str, peer: str,
                 stale_seconds: float = 15.0) -> None:
        self.records = records
        self.holder = holder
        self.peer = peer
        self.stale_seconds = stale_seconds

    def _mine(self, state: Literal["fetching", "stored"] = "fetching") -> FlightClaim:
        return FlightClaim(state=state, holder=self.holder, peer=self.peer, updated=time.time())

    async def claim(self, key: str) -> Outcome:
        try:
            try:
                return Claimed(await self.records.create(key, self._mine()))
            except ConflictError:
                pass
            found = await self.records.read(key)
            if found.value is None:
                # deleted between our create and our read: one more try decides it
                return Claimed(await self.records.create(key, self._mine()))
            claim = found.value
            if claim.state == "fetching" and time.time() - claim.updated > self.stale_seconds:
                # the holder died or stalls: take over (a conflict means another taker won)
                log.info("taking over the flight %s from %s", key, claim.holder)
                return Claimed(await self.records.write(key, self._mine(),
                                                        revision=found.revision))
            return Elsewhere(claim)
        except ConflictError:
            winner = await self._read_quietly(key)
            if winner is not None:
                return Elsewhere(winner)
            return Unknown("the flight changed hands while claiming it")
        except RetryableError as exc:
            return Unknown(str(exc))

    async def _read_quietly(self, key: str) -> FlightClaim | None:
        try:
            return (await self.records.read(key)).value
        except RetryableError:
            return None

    async def renew(self, key: str, revision: int) -> int | None:
        """The new revision; None when the claim was taken over (or NATS is away)."""
        try:
            return await self.records.write(key, self._mine(), revision=revision)
        except (ConflictError, RetryableError) as exc:
            log.debug("renewing the flight %s failed: %s", key, exc)
            return None

    async def stored(self, key: str) -> None:
        """The blob is in the registry: late replicas look there rather than fetch."""
        try:
            await self.records.put(key, self._mine("stored"))
        except RetryableError as exc:
            log.debug("marking the flight %s stored failed: %s", key, exc)

    async def abandon(self, key: str, revision: int) -> None:
        """Give a failed flight up, so the next request fetches anew."""
        try:
            await self.records.delete(key, revision=revision)
        except (ConflictError, RetryableError) as exc:
            log.debug("abandoning the flight %s failed: %s", key, exc)
