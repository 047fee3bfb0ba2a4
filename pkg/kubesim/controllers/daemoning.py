"""The DaemonSet controller: one pod per eligible node.

As in kube since 1.12, the controller does not bind daemon pods itself: it
creates each pod with a required node affinity on `metadata.name` (the
node it is for) and the automatic DaemonSet tolerations (unschedulable,
not-ready/unreachable NoExecute, the pressure taints), and the scheduler
binds it. A node is eligible when the template's nodeSelector/affinity
match it and its taints are tolerated, so cordoned nodes keep their daemon
pods, as on a real cluster; a pod already on a node that only gained a
NoSchedule taint (NotReady) stays, only NoExecute taints evict it. New
nodes get a pod, pods of nodes that are gone or no longer eligible are
deleted, failed daemon pods are replaced, and a template change rolls out
node by node within maxUnavailable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubesim.controllers.caching import DAEMONSETS, NODES, PODS
from kubesim.controllers.labels import pod_fits_node_selectors, selector_matches
from kubesim.controllers.objects import (
    Obj,
    available_in,
    deep_copy,
    generation_of,
    int_or_percent,
    is_pod_ready,
    is_terminating,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    node_name_of,
    now,
    owner_reference,
    pod_phase,
    sorted_by_creation,
    uid_of,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.scheduling import misfit, node_taints, tolerates
from kubesim.controllers.templates import (
    CONTROLLER_REVISION_HASH,
    compute_hash,
    generate_name_prefix,
    pod_from_template,
)
from kubesim.controllers.workloads import (
    claim,
    delete_ignoring_missing,
    omit_zero,
    owners_to_sync,
    slow_start,
    write_status,
)

POD_TEMPLATE_GENERATION = "pod-template-generation"

# util.AddOrUpdateDaemonPodTolerations
DAEMON_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
NETWORK_UNAVAILABLE = {
    "key": "node.kubernetes.io/network-unavailable",
    "operator": "Exists",
    "effect": "NoSchedule",
}


def target_node(pod: Obj) -> str:
    """util.GetTargetNodeName: spec.nodeName, else the metadata.name node affinity."""
    node = node_name_of(pod)
    if node:
        return node
    terms = (
        (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    ).get("nodeSelectorTerms") or []
    for term in terms:
        for field in term.get("matchFields") or []:
            values = field.get("values") or []
            if field.get("key") == "metadata.name" and field.get("operator") == "In" and values:
                return str(values[0])
    return ""


def daemon_pod_spec(template_spec: dict[str, Any], node: str) -> dict[str, Any]:
    """The template's pod spec pinned to one node, with the daemon tolerations."""
    spec = deep_copy(template_spec)
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    # ReplaceDaemonSetPodNodeNameNodeAffinity: the node was already matched, so one
    # term naming it replaces whatever terms the template had.
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        ]
    }
    tolerations = list(spec.get("tolerations") or [])
    extra = list(DAEMON_TOLERATIONS)
    if spec.get("hostNetwork"):
        extra.append(NETWORK_UNAVAILABLE)
    for toleration in extra:
        if not any(
            t.get("key") == toleration["key"] and t.get("effect") == toleration["effect"]
            for t in tolerations
        ):
            tolerations.append(dict(toleration))
    spec["tolerations"] = tolerations
    return spec


class DaemonSetController(Controller):
    name = "daemonset"
    workers = 2

    def initial_keys(self) -> Iterable[str]:
        return list(self.cache[DAEMONSETS].objects)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if kind == DAEMONSETS:
            self.queue.add(key_of(obj))
        elif kind == NODES:
            if (
                old is not None
                and new is not None
                and old.get("spec") == new.get("spec")
                and labels_of(old) == labels_of(new)
                and _ready(old) == _ready(new)
            ):
                return  # heartbeat-like change: nothing a DaemonSet decides on moved
            for key in self.cache[DAEMONSETS].objects:
                self.queue.add(key)
        elif kind == PODS:
            for key in owners_to_sync(old, new, owner_kind="DaemonSet",
                                      owners=self.cache[DAEMONSETS].objects):
                self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        ds = self.cache.get(DAEMONSETS, key)
        if ds is None:
            return
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        collisions = (ds.get("status") or {}).get("collisionCount")
        revision = compute_hash(template, collisions)
        pods_resource = self.ctx.resource(PODS)
        owner_ref = owner_reference(ds, api_version="apps/v1", kind="DaemonSet")
        pods = await claim(
            self.api,
            pods_resource,
            owner=ds,
            owner_ref=owner_ref,
            selector=spec.get("selector"),
            owned=self.cache[PODS].owned_by(uid_of(ds)),
            orphans=self.cache[PODS].orphans_in(namespace_of(ds)),
        )
        if not is_terminating(ds):
            await self._manage(ds, pods, revision=revision, owner_ref=owner_ref)
            pods = [
                p
                for p in self.cache[PODS].owned_by(uid_of(ds))
                if selector_matches(spec.get("selector"), labels_of(p))
            ]
        await self._update_status(ds, pods, revision=revision)

    def _eligible(self, ds: Obj) -> dict[str, Obj]:
        """Nodes that should run the daemon pod (NodeShouldRunDaemonPod's shouldRun)."""
        probe = self._probe(ds)
        return {
            name: node
            for name, node in self.cache[NODES].objects.items()
            if misfit(probe, node, load=0) is None
        }

    def _keepers(self, ds: Obj) -> set[str]:
        """Nodes where an existing daemon pod may stay (shouldContinueRunning).

        Only selectors/affinity and untolerated NoExecute taints evict a daemon
        pod; an untolerated NoSchedule taint (a node turning NotReady gets
        node.kubernetes.io/not-ready:NoSchedule) only stops new ones.
        """
        probe = self._probe(ds)
        spec = probe["spec"]
        keep: set[str] = set()
        for name, node in self.cache[NODES].objects.items():
            if not pod_fits_node_selectors(spec, node):
                continue
            if any(
                taint.get("effect") == "NoExecute" and not tolerates(spec["tolerations"], taint)
                for taint in node_taints(node)
            ):
                continue
            keep.add(name)
        return keep

    @staticmethod
    def _probe(ds: Obj) -> dict[str, Any]:
        """The template's pod as the controller judges it: with the daemon tolerations."""
        template_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        return {
            "spec": {
                **template_spec,
                "tolerations": list(template_spec.get("tolerations") or [])
                + list(DAEMON_TOLERATIONS),
            }
        }

    async def _manage(
        self, ds: Obj, pods: list[Obj], *, revision: str, owner_ref: dict[str, Any]
    ) -> None:
        eligible = self._eligible(ds)
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            by_node.setdefault(target_node(pod), []).append(pod)
        to_create: list[str] = []
        to_delete: list[Obj] = []
        for node in eligible:
            here = [p for p in by_node.get(node, []) if not is_terminating(p)]
            failed = [p for p in here if pod_phase(p) == "Failed"]
            to_delete.extend(failed)  # replaced by a fresh pod (kube backs this off)
            alive = [p for p in here if pod_phase(p) != "Failed"]
            if not alive and not any(is_terminating(p) for p in by_node.get(node, [])):
                to_create.append(node)
            elif len(alive) > 1:
                to_delete.extend(sorted_by_creation(alive)[1:])  # keep the oldest
        keep = self._keepers(ds)
        for node, here in by_node.items():
            if node not in keep:
                to_delete.extend(p for p in here if not is_terminating(p))
        to_delete.extend(
            self._rolling_update(
                ds, by_node, eligible=eligible, revision=revision, already=to_delete
            )
        )
        pods_resource = self.ctx.resource(PODS)
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        prefix = generate_name_prefix(name_of(ds))

        async def create(index: int) -> None:
            pod = pod_from_template(
                template,
                namespace=namespace_of(ds),
                owner_ref=owner_ref,
                generate_name=prefix,
                extra_labels={
                    CONTROLLER_REVISION_HASH: revision,
                    POD_TEMPLATE_GENERATION: str(generation_of(ds)),
                },
            )
            pod["spec"] = daemon_pod_spec(template.get("spec") or {}, to_create[index])
            await self.api.create(pods_resource, pod, namespace=namespace_of(ds))

        async def delete(index: int) -> None:
            await delete_ignoring_missing(self.api, pods_resource, obj=doomed[index])

        doomed = list({uid_of(p): p for p in to_delete}.values())
        await slow_start(len(doomed), delete)
        await slow_start(len(to_create), create)

    def _rolling_update(
        self,
        ds: Obj,
        by_node: dict[str, list[Obj]],
        *,
        eligible: dict[str, Obj],
        revision: str,
        already: list[Obj],
    ) -> list[Obj]:
        """Old-revision pods to delete now (rollingUpdate: maxUnavailable nodes at a time)."""
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return []
        rolling = strategy.get("rollingUpdate") or {}
        # maxSurge (create before delete) is not simulated: at least one node at a time.
        budget = max(
            int_or_percent(rolling.get("maxUnavailable", 1), len(eligible), round_up=True), 1
        )
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        at = now()
        skip = {uid_of(p) for p in already}
        unavailable = 0
        old_available: list[Obj] = []
        out: list[Obj] = []
        for node in eligible:
            alive = [
                p for p in by_node.get(node, []) if not is_terminating(p) and uid_of(p) not in skip
            ]
            if not alive:
                unavailable += 1
                continue
            pod = alive[0]
            available = available_in(pod, min_ready, at=at) == 0
            if not available:
                unavailable += 1
            if labels_of(pod).get(CONTROLLER_REVISION_HASH) == revision:
                continue
            if available:
                old_available.append(pod)
            else:
                out.append(pod)  # an unavailable old pod costs nothing to replace
        room = budget - unavailable
        out.extend(old_available[: max(room, 0)])
        return out

    async def _update_status(self, ds: Obj, pods: list[Obj], *, revision: str) -> None:
        eligible = self._eligible(ds)
        min_ready = int((ds.get("spec") or {}).get("minReadySeconds") or 0)
        at = now()
        by_node: dict[str, list[Obj]] = {}
        for pod in pods:
            if not is_terminating(pod):
                by_node.setdefault(target_node(pod), []).append(pod)
        scheduled = ready = available = updated = misscheduled = 0
        soonest: float | None = None
        for node, here in by_node.items():
            if node not in eligible:
                misscheduled += 1
                continue
            scheduled += 1
            if any(labels_of(p).get(CONTROLLER_REVISION_HASH) == revision for p in here):
                updated += 1
            if any(is_pod_ready(p) for p in here):
                ready += 1
                waits = [available_in(p, min_ready, at=at) for p in here]
                if any(w == 0 for w in waits):
                    available += 1
                else:
                    pending = [w for w in waits if w]
                    if pending:
                        soonest = min(pending) if soonest is None else min(soonest, *pending)
        if soonest is not None:
            self.queue.add_after(key_of(ds), soonest + 0.01)
        desired = len(eligible)
        status = omit_zero(
            {
                "currentNumberScheduled": scheduled,
                "numberMisscheduled": misscheduled,
                "desiredNumberScheduled": desired,
                "numberReady": ready,
                "observedGeneration": generation_of(ds),
                "updatedNumberScheduled": updated,
                "numberAvailable": available,
                "numberUnavailable": max(desired - available, 0),
            },
            keep=(
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
            ),
        )
        await write_status(self.api, self.ctx.resource(DAEMONSETS), obj=ds, status=status)


def _ready(node: Obj) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False
