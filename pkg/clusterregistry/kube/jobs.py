"""Kubernetes Jobs in one namespace, for the work GC hands to the registry's volume.

GC's hard delete runs in a cluster as a Job on the registry's volume (see
`gc.sweeping`). What GC needs of Jobs is small: create one, read its terminal
conditions, delete it with its pods, find the ones a dead GC left. Errors are
translated here (`kube.clients.translate`); a Job already gone is not an error
when deleting.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

from clusterregistry.kube.clients import TRANSPORT_ERRORS, status_of, translate


class Jobs:
    """batch/v1 Jobs of `namespace`, as plain dicts in and condition maps out."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._batch = client.BatchV1Api(api)
        self.namespace = namespace

    async def create(self, body: dict[str, Any]) -> None:
        name = body.get("metadata", {}).get("name", "")
        payload: Any = body  # a plain dict: the client serialises it as it is
        try:
            await self._batch.create_namespaced_job(self.namespace, payload)
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, f"creating Job {self.namespace}/{name}") from exc

    async def conditions(self, name: str) -> dict[str, str]:
        """The Job's status conditions, type -> status ("True", "False", "Unknown")."""
        try:
            job = await self._batch.read_namespaced_job_status(name, self.namespace)
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, f"reading Job {self.namespace}/{name}") from exc
        return {c.type: c.status for c in (job.status.conditions or [])}

    async def names(self, selector: dict[str, str]) -> list[str]:
        label_selector = ",".join(f"{key}={value}" for key, value in selector.items())
        try:
            jobs = await self._batch.list_namespaced_job(self.namespace,
                                                         label_selector=label_selector)
        except TRANSPORT_ERRORS as exc:
            raise translate(exc, f"listing Jobs in {self.namespace}") from exc
        return [job.metadata.name for job in jobs.items]

    async def delete(self, name: str) -> bool:
        """Delete the Job and (Foreground) its pods first; False when it was already gone."""
        try:
            await self._batch.delete_namespaced_job(name, self.namespace,
                                                    propagation_policy="Foreground")
        except TRANSPORT_ERRORS as exc:
            if status_of(exc) == 404:
                return False
            raise translate(exc, f"deleting Job {self.namespace}/{name}") from exc
        return True
