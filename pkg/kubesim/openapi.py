"""OpenAPI v3 discovery: enough of kube-apiserver's /openapi/v3 for kubectl to trust the server.

kubectl (create, apply, replace) asks /openapi/v3 whether each kind's PATCH
operation accepts the `fieldValidation` query parameter; when it does,
kubectl leaves validation to the server instead of downloading schemas for
client-side validation (and fails when it can download neither). So every
group version gets a document whose paths carry
`x-kubernetes-group-version-kind` and the query parameters kube-apiserver
declares, and CRD versions carry their openAPIV3Schema as a component.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from kubesim.resources import Registry, Resource

_QUERY = ("dryRun", "fieldManager", "fieldValidation", "pretty")
_LIST_QUERY = ("labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
               "resourceVersionMatch", "timeoutSeconds", "watch", "allowWatchBookmarks",
               "sendInitialEvents")


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _params(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for n in names]


def _schema_name(resource: Resource) -> str:
    # kube names component schemas by reversed group, e.g. io.k8s.api.core.v1.Pod
    group = ".".join(reversed(resource.group.split("."))) if resource.group else "io.k8s.api.core"
    return f"{group}.{resource.version}.{resource.kind}"


def _operation(resource: Resource, verb: str, params: tuple[str, ...]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{_schema_name(resource)}"}
    return {
        "operationId": f"{verb}{resource.kind}",
        "parameters": _params(params),
        "responses": {"200": {"description": "OK",
                              "content": {"application/json": {"schema": ref}}}},
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {"group": resource.group,
                                            "version": resource.version,
                                            "kind": resource.kind},
    }


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = [r for r in registry.groups().get(group, []) if r.version == version]
    if not resources:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    prefix = "/" + _gv_path(group, version)
    for resource in resources:
        base = f"{prefix}/namespaces/{{namespace}}/{resource.plural}" if resource.namespaced \
            else f"{prefix}/{resource.plural}"
        paths[base] = {
            "get": _operation(resource, "list", _LIST_QUERY),
            "post": _operation(resource, "post", _QUERY),
        }
        paths[f"{base}/{{name}}"] = {
            "get": _operation(resource, "get", ("pretty",)),
            "put": _operation(resource, "put", _QUERY),
            "patch": _operation(resource, "patch", (*_QUERY, "force")),
            "delete": _operation(resource, "delete", ("dryRun", "gracePeriodSeconds",
                                                       "propagationPolicy")),
        }
        for sub in sorted(resource.subresources):
            paths[f"{base}/{{name}}/{sub}"] = {
                "get": _operation(resource, "get", ("pretty",)),
                "put": _operation(resource, "put", _QUERY),
                "patch": _operation(resource, "patch", (*_QUERY, "force")),
            }
        schema: dict[str, Any] = dict(resource.schema or {"type": "object"})
        schema["x-kubernetes-group-version-kind"] = [
            {"group": resource.group, "version": resource.version, "kind": resource.kind}
        ]
        schemas[_schema_name(resource)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0-kubesim"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def index(registry: Registry) -> dict[str, Any]:
    """/openapi/v3: one entry per group version, addressed with a content hash."""
    entries: dict[str, Any] = {}
    for group, resources in registry.groups().items():
        for version in sorted({r.version for r in resources}):
            doc = group_version_document(registry, group, version)
            digest = hashlib.sha512(msgspec.json.encode(doc)).hexdigest()[:128].upper()
            path = _gv_path(group, version)
            entries[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": entries}
