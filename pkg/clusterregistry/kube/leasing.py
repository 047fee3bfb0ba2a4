"""Leader election with a coordination.k8s.io/v1 Lease, as Kubernetes controllers do it.

One holder at a time: a candidate takes the Lease when it is free or its
holder stopped renewing for leaseDurationSeconds, and every write carries
the resourceVersion it read, so two candidates racing for an expired Lease
cannot both win (the loser gets 409 Conflict). The holder renews every
`retry_period`; if it cannot renew within `renew_deadline` it must stop
acting as leader before another candidate can take over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from clusterregistry.errors import RetryableError

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _micro(ts: dt.datetime) -> str:
    # MicroTime: RFC3339 with microseconds
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


class LeaderElector:
    """Acquire and keep a Lease; `leading` tells whether this process may act."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self._leases = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.leading = False
        self._last_renew = 0.0

    def _body(self, *, resource_version: str | None, transitions: int,
              acquire_time: str) -> Any:
        # a plain dict: the client serialises it as is (typed as Any for its V1Lease stubs)
        now = _micro(_now())
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": self.identity,
                     "leaseDurationSeconds": max(1, round(self.lease_duration)),
                     "acquireTime": acquire_time, "renewTime": now,
                     "leaseTransitions": transitions},
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this process holds the Lease afterwards."""
        try:
            try:
                lease = await self._leases.read_namespaced_lease(self.name, self.namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                now = _micro(_now())
                await self._leases.create_namespaced_lease(
                    self.namespace, self._body(resource_version=None, transitions=0,
                                               acquire_time=now))
                return self._won()
            spec = lease.spec
            holder = spec.holder_identity or ""
            renewed = _parse(spec.renew_time) or _parse(spec.acquire_time)
            duration = spec.lease_duration_seconds or self.lease_duration
            expired = renewed is None or (_now() - renewed).total_seconds() > duration
            if holder and holder != self.identity and not expired:
                self.leading = False
                return False
            transitions = (spec.lease_transitions or 0) + (0 if holder == self.identity else 1)
            acquire = spec.acquire_time if holder == self.identity else _now()
            await self._leases.replace_namespaced_lease(
                self.name, self.namespace,
                self._body(resource_version=lease.metadata.resource_version,
                           transitions=transitions,
                           acquire_time=_micro(_parse(acquire) or _now())))
            return self._won()
        except ApiException as exc:
            if exc.status == 409:  # another candidate wrote first
                self.leading = False
                return False
            raise RetryableError(f"lease {self.namespace}/{self.name}: {exc.status} "
                                 f"{exc.reason}") from exc

    def _won(self) -> bool:
        if not self.leading:
            log.info("acquired lease %s/%s as %s", self.namespace, self.name, self.identity)
        self.leading = True
        self._last_renew = asyncio.get_running_loop().time()
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        while True:
            try:
                if await self.try_acquire_or_renew():
                    return
            except RetryableError as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.retry_period)  # client-go's retryPeriod between attempts

    async def keep(self) -> None:
        """Renew until renewal fails for `renew_deadline`; then return (leadership lost)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if not await self.try_acquire_or_renew():
                    log.warning("lease %s/%s taken by another holder", self.namespace,
                                self.name)
                    return
            except RetryableError as exc:
                log.warning("lease renewal failed: %s", exc)
                if loop.time() - self._last_renew > self.renew_deadline:
                    self.leading = False
                    return

    async def release(self) -> None:
        """Give the Lease up at shutdown so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self._leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec.holder_identity != self.identity:
                return
            body = self._body(resource_version=lease.metadata.resource_version,
                              transitions=lease.spec.lease_transitions or 0,
                              acquire_time=_micro(_parse(lease.spec.acquire_time) or _now()))
            body["spec"]["holderIdentity"] = ""
            body["spec"]["leaseDurationSeconds"] = 1
            await self._leases.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            log.warning("lease release: %s %s", exc.status, exc.reason)
