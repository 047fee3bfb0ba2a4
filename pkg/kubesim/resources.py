"""The resource types kubesim serves: built-in ones and those CRDs add.

A Resource is what discovery advertises and what every request is routed
by: group, version, plural, kind, scope, verbs and subresources. Built-in
types are declared here once; a CustomResourceDefinition becomes one
Resource per served version when it is created (see `from_crd`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    verbs: tuple[str, ...] = ALL_VERBS
    # CRD additionalPrinterColumns (name, type, jsonPath, description, priority, format)
    printer_columns: tuple[dict[str, Any], ...] = ()
    # CRD openAPIV3Schema of this version; None for built-in types
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False)
    # whether this version is the storage version (CRDs), which discovery lists first
    storage: bool = True
    # the group_resource whose storage this resource is another view of: kube-apiserver's
    # "cohabitating" resources (events.events.k8s.io is stored as, and with, core events)
    cohabits_with: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def storage_key(self) -> str:
        """Which objects this resource serves: its own, or those of the resource it cohabits
        with (all versions of a resource share one storage, as in etcd)."""
        return self.cohabits_with or self.group_resource

    @property
    def is_custom(self) -> bool:
        return self.schema is not None


def _r(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
    cohabits: str = "",
) -> Resource:
    return Resource(
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        categories=categories,
        subresources=frozenset(sub),
        verbs=verbs,
        cohabits_with=cohabits,
    )


BUILTIN: tuple[Resource, ...] = (
    _r("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",), sub=("status",),
       verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _r("", "v1", "nodes", "Node", namespaced=False, short=("no",), sub=("status",)),
    _r("", "v1", "pods", "Pod", short=("po",), sub=("status", "ephemeralcontainers", "binding"),
       categories=("all",)),
    _r("", "v1", "secrets", "Secret"),
    _r("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _r("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _r("", "v1", "events", "Event", short=("ev",)),
    # Stored and served, nothing acts on them (no cluster IPs or endpoints, no volume
    # binding): enough for manifests (kubectl apply of a whole deployment) to be accepted.
    _r("", "v1", "services", "Service", short=("svc",), sub=("status",), categories=("all",)),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=("pvc",),
       sub=("status",)),
    _r("apps", "v1", "deployments", "Deployment", short=("deploy",), sub=("status", "scale"),
       categories=("all",)),
    _r("apps", "v1", "replicasets", "ReplicaSet", short=("rs",), sub=("status", "scale"),
       categories=("all",)),
    _r("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), sub=("status",),
       categories=("all",)),
    _r("apps", "v1", "statefulsets", "StatefulSet", short=("sts",), sub=("status", "scale"),
       categories=("all",)),
    # The newer Events API: a second view of the core events (one storage, converted field by
    # field on the way in and out; see kubesim.events). Discovery lists it after apps, as
    # kube-apiserver does, and kubectl resolves plain "events" to the core group first.
    _r("events.k8s.io", "v1", "events", "Event", short=("ev",), cohabits="events"),
    _r("batch", "v1", "jobs", "Job", sub=("status",), categories=("all",)),
    _r("batch", "v1", "cronjobs", "CronJob", short=("cj",), sub=("status",),
       categories=("all",)),
    _r("coordination.k8s.io", "v1", "leases", "Lease"),
    # Stored only: RBAC is not enforced (any token is accepted), no autoscaler, no eviction
    # API honouring disruption budgets, no network plugin.
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
       namespaced=False),
    _r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
       short=("hpa",), sub=("status",), categories=("all",)),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",),
       sub=("status",)),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    _r("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations",
       "MutatingWebhookConfiguration", namespaced=False),
    _r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
       namespaced=False, short=("crd", "crds"), sub=("status",)),
)


def from_crd(crd: dict[str, Any]) -> list[Resource]:
    """One Resource per served version of a CustomResourceDefinition."""
    spec = crd["spec"]
    names = spec["names"]
    out: list[Resource] = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {}
        out.append(
            Resource(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                singular=names.get("singular") or names["kind"].lower(),
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=frozenset(k for k in ("status", "scale") if k in subresources),
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                schema=schema,
                storage=bool(version.get("storage", False)),
            )
        )
    return out


class Registry:
    """The set of served resources, looked up by (group, version, plural) or by kind."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], Resource] = {}
        self._crd_owned: dict[str, list[Resource]] = {}
        for resource in BUILTIN:
            self._add(resource)

    def _add(self, resource: Resource) -> None:
        self._by_gvr[(resource.group, resource.version, resource.plural)] = resource

    def install_crd(self, crd: dict[str, Any]) -> list[Resource]:
        self.remove_crd(crd["metadata"]["name"])
        resources = from_crd(crd)
        for resource in resources:
            self._add(resource)
        self._crd_owned[crd["metadata"]["name"]] = resources
        return resources

    def remove_crd(self, crd_name: str) -> list[Resource]:
        removed = self._crd_owned.pop(crd_name, [])
        for resource in removed:
            self._by_gvr.pop((resource.group, resource.version, resource.plural), None)
        return removed

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_gvr.get((group, version, plural))

    def for_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        for resource in self._by_gvr.values():
            if resource.group == group and resource.version == version and resource.kind == kind:
                return resource
        return None

    def all(self) -> list[Resource]:
        return list(self._by_gvr.values())

    def groups(self) -> dict[str, list[Resource]]:
        """Resources by group name ('' for core), in registration order."""
        out: dict[str, list[Resource]] = {}
        for resource in self._by_gvr.values():
            out.setdefault(resource.group, []).append(resource)
        return out
