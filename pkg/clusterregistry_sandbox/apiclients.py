"""A small JSON client for the sandbox's API server, read from its kubeconfig.

The sandbox and the demo create arbitrary objects (namespaces, Deployments,
a MutatingWebhookConfiguration, the Artifact CRD), list and watch them, and
must do so against whatever API server the kubeconfig names, over HTTPS with
the kubeconfig's CA, as kubectl would. Typed clients are built for one kind
at a time; these steps need plain JSON on REST paths, so this is that, and no
more: a path per resource, errors carrying the API's Status message.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

__all__ = ["ApiClient", "ApiError", "ResourcePath", "path_of"]

Obj = dict[str, Any]


class ApiError(RuntimeError):
    """The API server answered with an error Status (or not at all)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


@dataclass(frozen=True)
class ResourcePath:
    """Where a resource lives on the REST API: group, version, plural, namespaced."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def url(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


_KNOWN: dict[str, ResourcePath] = {
    "Namespace": ResourcePath("", "v1", "namespaces", namespaced=False),
    "Node": ResourcePath("", "v1", "nodes", namespaced=False),
    "Pod": ResourcePath("", "v1", "pods"),
    "Secret": ResourcePath("", "v1", "secrets"),
    "Event": ResourcePath("", "v1", "events"),
    "ConfigMap": ResourcePath("", "v1", "configmaps"),
    "Deployment": ResourcePath("apps", "v1", "deployments"),
    "ReplicaSet": ResourcePath("apps", "v1", "replicasets"),
    "DaemonSet": ResourcePath("apps", "v1", "daemonsets"),
    "StatefulSet": ResourcePath("apps", "v1", "statefulsets"),
    "Job": ResourcePath("batch", "v1", "jobs"),
    "CustomResourceDefinition": ResourcePath(
        "apiextensions.k8s.io", "v1", "customresourcedefinitions", namespaced=False
    ),
    "MutatingWebhookConfiguration": ResourcePath(
        "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", namespaced=False
    ),
    "Artifact": ResourcePath("clusterregistry.io", "v1alpha1", "artifacts", namespaced=False),
}


def path_of(kind: str) -> ResourcePath:
    """The REST path of a kind the sandbox uses (KeyError for any other)."""
    return _KNOWN[kind]


class ApiClient:
    """JSON over HTTPS to the server a kubeconfig names (its first cluster and user)."""

    def __init__(self, kubeconfig: Path) -> None:
        document = yaml.safe_load(kubeconfig.read_text())
        cluster = document["clusters"][0]["cluster"]
        user = (document.get("users") or [{}])[0].get("user") or {}
        self.server: str = cluster["server"]
        context: ssl.SSLContext | bool = True
        if cluster.get("certificate-authority-data"):
            pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
            context = ssl.create_default_context(cadata=pem)
        headers = {"Accept": "application/json"}
        if user.get("token"):
            headers["Authorization"] = f"Bearer {user['token']}"
        self._session = aiohttp.ClientSession(
            base_url=self.server,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Obj:
        data = None if body is None else json.dumps(body).encode()
        try:
            async with self._session.request(
                method,
                url,
                data=data,
                params=params,
                headers={"Content-Type": content_type} if data is not None else None,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
                if response.status >= 400:
                    with contextlib.suppress(ValueError):
                        text = json.loads(text).get("message", text)
                    raise ApiError(response.status, f"{method} {url}: {text}")
                parsed: Obj = json.loads(text) if text else {}
                return parsed
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(0, f"{method} {url}: {exc!r}") from exc

    async def get(self, kind: str, name: str, *, namespace: str | None = None) -> Obj | None:
        """The object, or None when it does not exist."""
        try:
            return await self._call("GET", path_of(kind).url(namespace=namespace, name=name))
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    async def list(
        self, kind: str, *, namespace: str | None = None, selector: str | None = None,
        fields: str | None = None,
    ) -> builtins.list[Obj]:
        params = {"labelSelector": selector} if selector else {}
        if fields:
            params["fieldSelector"] = fields
        document = await self._call("GET", path_of(kind).url(namespace=namespace), params=params)
        items: builtins.list[Obj] = document.get("items") or []
        return items

    async def list_with_version(self, kind: str) -> tuple[builtins.list[Obj], str]:
        document = await self._call("GET", path_of(kind).url())
        return document.get("items") or [], str(document["metadata"]["resourceVersion"])

    async def create(self, body: Obj, *, namespace: str | None = None) -> Obj:
        kind = str(body["kind"])
        ns = namespace or (body.get("metadata") or {}).get("namespace")
        return await self._call("POST", path_of(kind).url(namespace=ns), body=body)

    async def apply(self, body: Obj, *, namespace: str | None = None) -> Obj:
        """Create, or replace the existing object's spec (resourceVersion carried over)."""
        try:
            return await self.create(body, namespace=namespace)
        except ApiError as exc:
            if exc.code != 409:
                raise
        kind, name = str(body["kind"]), str(body["metadata"]["name"])
        ns = namespace or body["metadata"].get("namespace")
        current = await self.get(kind, name, namespace=ns)
        if current is None:
            return await self.create(body, namespace=namespace)
        replacement = json.loads(json.dumps(body))
        replacement["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return await self._call(
            "PUT", path_of(kind).url(namespace=ns, name=name), body=replacement
        )

    async def patch(
        self, kind: str, name: str, patch: Obj, *, namespace: str | None = None
    ) -> Obj:
        """A JSON merge patch."""
        return await self._call(
            "PATCH",
            path_of(kind).url(namespace=namespace, name=name),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def delete(
        self,
        kind: str,
        name: str,
        *,
        namespace: str | None = None,
        propagation: str = "Background",
        grace_period: int | None = None,
    ) -> bool:
        """Delete; False when it was already gone."""
        options: Obj = {"propagationPolicy": propagation}
        if grace_period is not None:
            options["gracePeriodSeconds"] = grace_period
        try:
            await self._call(
                "DELETE", path_of(kind).url(namespace=namespace, name=name), body=options
            )
        except ApiError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    async def watch(
        self, kind: str, *, resource_version: str, namespace: str | None = None
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) pairs from a watch starting after `resource_version`."""
        params = {"watch": "1", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "false"}
        url = path_of(kind).url(namespace=namespace)
        async with self._session.get(url, params=params) as response:
            if response.status >= 400:
                raise ApiError(response.status, f"watch {url}: {await response.text()}")
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                yield str(event.get("type")), event.get("object") or {}
