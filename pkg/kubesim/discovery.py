"""Discovery documents: how clients learn which resources the server serves.

Two forms exist. The legacy one (APIVersions at /api, APIGroupList at /apis,
an APIResourceList per group version) and the aggregated one (one
APIGroupDiscoveryList for /api and one for /apis, content type
`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`),
which kubectl asks for first. The aggregated response must echo that exact
content type, or client-go treats the body as the legacy form.
"""

from __future__ import annotations

from typing import Any

from kubesim.resources import Registry, Resource

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

_SUBRESOURCE_KINDS = {"scale": "Scale", "binding": "Binding"}
_SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "ephemeralcontainers": ["get", "patch", "update"],
    "binding": ["create"],
}


def _versions(resources: list[Resource]) -> list[str]:
    """Versions of one group, storage version first as kube's preferred version."""
    ordered: list[str] = []
    for resource in sorted(resources, key=lambda r: not r.storage):
        if resource.version not in ordered:
            ordered.append(resource.version)
    return ordered


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str, resources: list[Resource]) -> dict[str, Any]:
    versions = [
        {"groupVersion": f"{group}/{v}", "version": v} for v in _versions(resources)
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    groups = [
        api_group(group, resources)
        for group, resources in registry.groups().items()
        if group
    ]
    for group in groups:
        group.pop("kind")
        group.pop("apiVersion")
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    resources = [r for r in registry.groups().get(group, []) if r.version == version]
    if not resources:
        return None
    items: list[dict[str, Any]] = []
    for resource in resources:
        entry: dict[str, Any] = {
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(resource.verbs),
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        if resource.categories:
            entry["categories"] = list(resource.categories)
        items.append(entry)
        for sub in sorted(resource.subresources):
            sub_entry: dict[str, Any] = {
                "name": f"{resource.plural}/{sub}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": _SUBRESOURCE_KINDS.get(sub, resource.kind),
                "verbs": _SUBRESOURCE_VERBS.get(sub, ["get"]),
            }
            if sub == "scale":
                sub_entry["group"] = "autoscaling"
                sub_entry["version"] = "v1"
            items.append(sub_entry)
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": items,
    }


def _discovery_resource(resource: Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource.plural,
        "responseKind": {"group": resource.group, "version": resource.version,
                         "kind": resource.kind},
        "scope": "Namespaced" if resource.namespaced else "Cluster",
        "singularResource": resource.singular,
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        entry["shortNames"] = list(resource.short_names)
    if resource.categories:
        entry["categories"] = list(resource.categories)
    subs = []
    for sub in sorted(resource.subresources):
        kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"} if sub == "scale" else (
            {"group": resource.group, "version": resource.version,
             "kind": _SUBRESOURCE_KINDS.get(sub, resource.kind)}
        )
        subs.append({"subresource": sub, "responseKind": kind,
                     "verbs": _SUBRESOURCE_VERBS.get(sub, ["get"])})
    if subs:
        entry["subresources"] = subs
    return entry


def aggregated(registry: Registry, *, core: bool, api_version: str = "v2") -> dict[str, Any]:
    """APIGroupDiscoveryList for /api (core=True) or /apis."""
    items: list[dict[str, Any]] = []
    for group, resources in registry.groups().items():
        if bool(group) == core:
            continue
        versions = []
        for version in _versions(resources):
            versions.append({
                "version": version,
                "resources": [_discovery_resource(r) for r in resources if r.version == version],
                "freshness": "Current",
            })
        items.append({"metadata": {"name": group, "creationTimestamp": None},
                      "versions": versions})
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{api_version}",
        "metadata": {},
        "items": items,
    }
