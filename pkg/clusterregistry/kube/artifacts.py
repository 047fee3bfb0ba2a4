"""The Artifact custom resource (`artifacts.clusterregistry.io`), read and written safely.

The reconciler creates Artifacts and keeps their status true; GC marks them
Deleting and deletes them. Both write concurrently, so every write that
depends on what was read carries the resourceVersion it read: a status patch
puts it in `metadata.resourceVersion` of the merge patch (kube-apiserver then
applies the patch only to that version) and a delete sends it as
DeleteOptions.preconditions. A lost race is a 409, raised as ConflictError:
re-read and decide again, never overwrite.

Errors, translated here and nowhere else: 404 is "absent" (None / False, or
NotFoundError for a write to a missing object), 409 ConflictError, 5xx, 429
and transport failures RetryableError, any other 4xx PermanentError (the
request itself is wrong, e.g. a spec the CRD schema rejects).
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from clusterregistry.kinds import ARTIFACT_GROUP, ARTIFACT_PLURAL, ARTIFACT_VERSION
from clusterregistry.kube.clients import TRANSPORT_ERRORS as _TRANSPORT
from clusterregistry.kube.clients import translate as _translate
from clusterregistry.kube.events import ObjectRef

API_VERSION = f"{ARTIFACT_GROUP}/{ARTIFACT_VERSION}"
KIND = "Artifact"
_MERGE_PATCH = "application/merge-patch+json"


def reference(name: str, uid: str = "") -> ObjectRef:
    """What an Event about the Artifact `name` names (cluster-scoped: no namespace). Without
    the uid `kubectl describe artifact` does not find the event (it selects on the uid)."""
    return ObjectRef(api_version=API_VERSION, kind=KIND, name=name, uid=uid)


def reference_of(artifact: dict[str, Any]) -> ObjectRef:
    meta = artifact.get("metadata") or {}
    return reference(str(meta.get("name") or ""), str(meta.get("uid") or ""))


class Artifacts:
    """Cluster-scoped Artifact objects as plain dicts (the JSON the API server returns)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._api = client.CustomObjectsApi(api)

    async def get(self, name: str) -> dict[str, Any] | None:
        try:
            found = await self._api.get_cluster_custom_object(
                ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL, name)
        except _TRANSPORT as exc:
            if isinstance(exc, ApiException) and exc.status == 404:
                return None
            raise _translate(exc, f"get artifact {name}") from exc
        return dict(found)

    async def list(self, *, page_size: int = 500) -> list[dict[str, Any]]:
        """Every Artifact, read page by page (one consistent snapshot per list)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": page_size}
            if token:
                kwargs["_continue"] = token
            try:
                page = await self._api.list_cluster_custom_object(
                    ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL, **kwargs)
            except _TRANSPORT as exc:
                raise _translate(exc, "list artifacts") from exc
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return items

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create; ConflictError (409 AlreadyExists) when the name is taken."""
        body = {"apiVersion": API_VERSION, "kind": KIND, **body}
        name = (body.get("metadata") or {}).get("name", "?")
        try:
            created = await self._api.create_cluster_custom_object(
                ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL, body)
        except _TRANSPORT as exc:
            raise _translate(exc, f"create artifact {name}") from exc
        return dict(created)

    async def patch_status(
        self, name: str, status: dict[str, Any], *, resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; with `resource_version`, only that version.

        In a merge patch, `null` deletes a field, so callers can clear one explicitly.
        """
        patch: dict[str, Any] = {"status": status}
        if resource_version:
            # kube-apiserver: a resourceVersion in a patch is a precondition (409 otherwise)
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            patched = await self._api.patch_cluster_custom_object_status(
                ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL, name, patch,
                # without it the client picks json-patch+json for a dict body
                _content_type=_MERGE_PATCH)  # type: ignore[call-arg]
        except _TRANSPORT as exc:
            raise _translate(exc, f"patch artifact {name} status") from exc
        return dict(patched)

    async def delete(self, name: str, *, resource_version: str | None = None) -> bool:
        """Delete; False when it was already gone, ConflictError when it changed since
        `resource_version` was read (someone referenced it again: decide again)."""
        # a plain dict: the client serialises it as is (typed Any for its V1DeleteOptions stub)
        body: Any = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if resource_version:
            body["preconditions"] = {"resourceVersion": resource_version}
        try:
            await self._api.delete_cluster_custom_object(
                ARTIFACT_GROUP, ARTIFACT_VERSION, ARTIFACT_PLURAL, name, body=body)
        except _TRANSPORT as exc:
            if isinstance(exc, ApiException) and exc.status == 404:
                return False
            raise _translate(exc, f"delete artifact {name}") from exc
        return True
