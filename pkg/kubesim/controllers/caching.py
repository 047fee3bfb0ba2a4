"""The controller manager's shared informer cache and its indexes.

Real controllers read from informer caches, never from the API server, and
find a workload's pods through indexes. kubesim's controllers do the same:
one Cache, fed synchronously by `ApiServer.subscribe` after an initial list,
holds the current object of every watched resource and keeps the indexes
that keep reconciles proportional to what they touch rather than to the
cluster (100,000 pods must not mean 100,000 comparisons per event):

* objects by controller owner uid (pods of a ReplicaSet, ReplicaSets of a
  Deployment, Jobs of a CronJob, ...), and per owner the number of active
  and of ready pods, kept up to date per event so a ReplicaSet of 100,000
  pods can report its status without walking them,
* objects without a controller per namespace (candidates for adoption),
* pods by node, pods not yet bound, the number of non-terminal pods bound
  to each node (the scheduler's load) and the existing nodes bucketed by that
  load, so the least-loaded node is found without scanning every node.

Because listeners run synchronously after each commit, the cache is never
behind a write the controllers themselves made once its await returns;
kube's "expectations" (which exist because informers lag) are unnecessary.
Cached objects are shared snapshots: never mutate them, deep-copy first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubesim.controllers.objects import (
    TERMINAL_PHASES,
    Obj,
    controller_ref,
    is_pod_active,
    is_pod_ready,
    key_of,
    namespace_of,
    node_name_of,
    pod_phase,
)
from kubesim.controllers.recording import EventsRecorder, Recorder, Recorders

if TYPE_CHECKING:
    from kubesim.apiserver import ApiServer
    from kubesim.resources import Resource

PODS = "pods"
NODES = "nodes"
REPLICASETS = "replicasets.apps"
DEPLOYMENTS = "deployments.apps"
DAEMONSETS = "daemonsets.apps"
STATEFULSETS = "statefulsets.apps"
JOBS = "jobs.batch"
CRONJOBS = "cronjobs.batch"

# group_resource -> (apiVersion, kind)
WATCHED: dict[str, tuple[str, str]] = {
    PODS: ("v1", "Pod"),
    NODES: ("v1", "Node"),
    REPLICASETS: ("apps/v1", "ReplicaSet"),
    DEPLOYMENTS: ("apps/v1", "Deployment"),
    DAEMONSETS: ("apps/v1", "DaemonSet"),
    STATEFULSETS: ("apps/v1", "StatefulSet"),
    JOBS: ("batch/v1", "Job"),
    CRONJOBS: ("batch/v1", "CronJob"),
}


@dataclass
class Store:
    """The objects of one resource, with owner and orphan indexes."""

    objects: dict[str, Obj] = field(default_factory=dict)
    by_owner: dict[str, set[str]] = field(default_factory=dict)
    orphans: dict[str, set[str]] = field(default_factory=dict)

    def _unindex(self, key: str, obj: Obj) -> None:
        ref = controller_ref(obj)
        if ref is not None:
            keys = self.by_owner.get(ref.get("uid", ""))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.by_owner[ref.get("uid", "")]
        else:
            keys = self.orphans.get(namespace_of(obj))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.orphans[namespace_of(obj)]

    def _index(self, key: str, obj: Obj) -> None:
        ref = controller_ref(obj)
        if ref is not None:
            self.by_owner.setdefault(ref.get("uid", ""), set()).add(key)
        else:
            self.orphans.setdefault(namespace_of(obj), set()).add(key)

    def put(self, key: str, obj: Obj) -> Obj | None:
        old = self.objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self.objects[key] = obj
        self._index(key, obj)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self.objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def owned_by(self, uid: str) -> list[Obj]:
        return [self.objects[key] for key in self.by_owner.get(uid, ())]

    def orphans_in(self, namespace: str) -> list[Obj]:
        return [self.objects[key] for key in self.orphans.get(namespace, ())]


class Cache:
    """Current objects of every watched resource, plus the pod/node indexes."""

    def __init__(self) -> None:
        self.stores: dict[str, Store] = {kind: Store() for kind in WATCHED}
        self.pods_by_node: dict[str, set[str]] = {}
        self.unbound_pods: set[str] = set()
        self.node_load: Counter[str] = Counter()
        # load -> names of existing nodes with that many non-terminal pods
        self.load_buckets: dict[int, set[str]] = {}
        self._bucket_of: dict[str, int] = {}
        # controller owner uid -> [active pods, ready active pods]
        self.owner_stats: dict[str, list[int]] = {}

    def pod_counts(self, owner_uid: str) -> tuple[int, int]:
        """(active, ready-and-active) pods controlled by the owner."""
        stats = self.owner_stats.get(owner_uid)
        return (stats[0], stats[1]) if stats is not None else (0, 0)

    def _count(self, pod: Obj, sign: int) -> None:
        ref = controller_ref(pod)
        if ref is None or not is_pod_active(pod):
            return
        uid = str(ref.get("uid", ""))
        stats = self.owner_stats.setdefault(uid, [0, 0])
        stats[0] += sign
        if is_pod_ready(pod):
            stats[1] += sign
        if stats[0] <= 0 and stats[1] <= 0:
            del self.owner_stats[uid]

    def __getitem__(self, kind: str) -> Store:
        return self.stores[kind]

    def get(self, kind: str, key: str) -> Obj | None:
        return self.stores[kind].objects.get(key)

    def all(self, kind: str) -> Iterator[Obj]:
        return iter(list(self.stores[kind].objects.values()))

    def pods_on(self, node: str) -> list[Obj]:
        objects = self.stores[PODS].objects
        return [objects[key] for key in self.pods_by_node.get(node, ())]

    def apply(self, kind: str, event: str, *, obj: Obj) -> Obj | None:
        """Record a change; returns the previous cached object, if any."""
        store = self.stores[kind]
        key = key_of(obj)
        old = store.remove(key) if event == "DELETED" else store.put(key, obj)
        if kind == PODS:
            if old is not None:
                self._unindex_pod(key, old)
                self._count(old, -1)
            if event != "DELETED":
                self._index_pod(key, obj)
                self._count(obj, +1)
        elif kind == NODES:
            if event == "DELETED":
                self._unbucket(key)
            elif key not in self._bucket_of:
                self._bucket(key)
        return old

    def _bucket(self, node: str) -> None:
        load = self.node_load.get(node, 0)
        self.load_buckets.setdefault(load, set()).add(node)
        self._bucket_of[node] = load

    def _unbucket(self, node: str) -> None:
        load = self._bucket_of.pop(node, None)
        if load is None:
            return
        bucket = self.load_buckets.get(load)
        if bucket is not None:
            bucket.discard(node)
            if not bucket:
                del self.load_buckets[load]

    def _load_changed(self, node: str) -> None:
        if node in self._bucket_of:
            self._unbucket(node)
            self._bucket(node)

    def _index_pod(self, key: str, pod: Obj) -> None:
        node = node_name_of(pod)
        if node:
            self.pods_by_node.setdefault(node, set()).add(key)
            if pod_phase(pod) not in TERMINAL_PHASES:
                self.node_load[node] += 1
                self._load_changed(node)
        elif pod_phase(pod) not in TERMINAL_PHASES:
            self.unbound_pods.add(key)

    def _unindex_pod(self, key: str, pod: Obj) -> None:
        node = node_name_of(pod)
        if node:
            keys = self.pods_by_node.get(node)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.pods_by_node[node]
            if pod_phase(pod) not in TERMINAL_PHASES:
                self.node_load[node] -= 1
                if self.node_load[node] <= 0:
                    del self.node_load[node]
                self._load_changed(node)
        else:
            self.unbound_pods.discard(key)


@dataclass
class Context:
    """What every controller shares: the API, the cache, resolved resources, and the event
    recorders (the controller manager's; one of its own when none is given)."""

    api: ApiServer
    cache: Cache
    resources: dict[str, Resource]
    settings: dict[str, Any] = field(default_factory=dict)
    recorders: Recorders | None = None

    def resource(self, kind: str) -> Resource:
        return self.resources[kind]

    def _recorders(self) -> Recorders:
        if self.recorders is None:
            self.recorders = Recorders(self.api)
        return self.recorders

    def recorder_for(self, component: str, *, host: str = "") -> Recorder:
        """The core/v1 event recorder of a component on a host, as the kubelet's:
        `ctx.recorder_for("kubelet", host=node).event(pod, "Normal", "Pulled", message,
        field_path="spec.containers{web}")`; see kubesim.controllers.recording."""
        return self._recorders().recorder_for(component, host=host)

    def event_recorder_for(self, controller: str) -> EventsRecorder:
        """The events.k8s.io event recorder of a controller, as kube-scheduler's."""
        return self._recorders().event_recorder_for(controller)
