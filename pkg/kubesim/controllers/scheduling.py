"""The scheduler: binds pending pods to nodes.

A much reduced kube-scheduler: the filters are NodeReady/NodeUnschedulable
(as the taints node.kubernetes.io/not-ready and .../unschedulable, which a
pod may tolerate, as DaemonSet pods do), the node's own NoSchedule and
NoExecute taints, spec.nodeSelector, required node affinity
(matchExpressions on labels, matchFields on metadata.name) and the node's
pod capacity; the score is "fewest non-terminal pods". A pod that fits
nowhere stays Pending with PodScheduled=False/Unschedulable and the
scheduler's message, and is retried when a node appears or changes, or a
bound pod goes away.

Binding goes through the pods/binding subresource, as kube-scheduler's
does; the API server sets spec.nodeName and PodScheduled=True.

Events are kube-scheduler's, through its events.k8s.io recorder (reporting
controller `default-scheduler`): `Scheduled` (Normal, action Binding,
"Successfully assigned <ns>/<pod> to <node>") after a successful bind, and
`FailedScheduling` (Warning, action Scheduling, the fit error's message) on
every failed attempt, recorded before the PodScheduled condition is
written, about the pod as the attempt saw it. Attempts about the same pod
(same resourceVersion) are isomorphic and become one Event with a series;
like kube-scheduler's queue, the scheduler does not retry a pod for a change
of its status alone, so writing the condition is no new attempt.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from kubesim.controllers.caching import NODES, PODS
from kubesim.controllers.labels import pod_fits_node_selectors
from kubesim.controllers.objects import (
    Obj,
    condition_true,
    get_condition,
    is_pod_active,
    is_terminating,
    key_of,
    meta,
    name_of,
    namespace_of,
    node_name_of,
    now,
    rfc3339,
    set_condition,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.recording import NORMAL, NOTE_LENGTH_LIMIT, WARNING
from kubesim.controllers.workloads import write_status
from kubesim.statuses import ApiError

log = logging.getLogger(__name__)

DEFAULT_SCHEDULER = "default-scheduler"
TAINT_NOT_READY = "node.kubernetes.io/not-ready"
TAINT_UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
DEFAULT_MAX_PODS = 110


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """v1.Toleration.ToleratesTaint for any of the tolerations."""
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        operator = toleration.get("operator") or "Equal"
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (
            taint.get("value") or ""
        ):
            return True
    return False


def node_taints(node: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The node's taints plus those the node lifecycle controller would add."""
    spec = node.get("spec") or {}
    taints: list[dict[str, Any]] = [dict(t) for t in spec.get("taints") or []]
    keys = {t.get("key") for t in taints}
    if spec.get("unschedulable") and TAINT_UNSCHEDULABLE not in keys:
        taints.append({"key": TAINT_UNSCHEDULABLE, "effect": "NoSchedule"})
    if not condition_true(node, "Ready") and TAINT_NOT_READY not in keys:
        taints.append({"key": TAINT_NOT_READY, "effect": "NoSchedule"})
    return taints


def max_pods(node: Mapping[str, Any]) -> int:
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    try:
        return int(allocatable.get("pods", DEFAULT_MAX_PODS))
    except (TypeError, ValueError):
        return DEFAULT_MAX_PODS


def misfit(pod: Mapping[str, Any], node: Mapping[str, Any], *, load: int) -> str | None:
    """Why the pod cannot go to the node (the scheduler's wording), or None if it fits."""
    spec = pod.get("spec") or {}
    if is_terminating(node):
        return "node(s) were being deleted"
    if not pod_fits_node_selectors(spec, node):
        return "node(s) didn't match Pod's node affinity/selector"
    tolerations = spec.get("tolerations") or []
    for taint in node_taints(node):
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if tolerates(tolerations, taint):
            continue
        if taint.get("key") == TAINT_UNSCHEDULABLE:
            return "node(s) were unschedulable"
        value = taint.get("value") or ""
        return f"node(s) had untolerated taint {{{taint.get('key')}: {value}}}"
    if load >= max_pods(node):
        return "Too many pods"
    return None


def pinned_nodes(pod: Mapping[str, Any]) -> list[str] | None:
    """Node names a pod's required affinity restricts it to (matchFields metadata.name In),
    when every term does so; None when the pod may go anywhere its selectors allow."""
    required = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if not terms:
        return None
    names: list[str] = []
    for term in terms:
        fields = [
            f
            for f in term.get("matchFields") or []
            if f.get("key") == "metadata.name" and f.get("operator") == "In"
        ]
        if not fields:
            return None
        names.extend(str(v) for v in fields[0].get("values") or [])
    return names


def pod_updated(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """The scheduling queue's isPodUpdated: a change beyond status, resourceVersion,
    generation, managedFields and finalizers."""

    def strip(pod: Mapping[str, Any]) -> dict[str, Any]:
        stripped = {k: v for k, v in pod.items() if k != "status"}
        stripped["metadata"] = {
            k: v
            for k, v in (pod.get("metadata") or {}).items()
            if k not in ("resourceVersion", "generation", "managedFields", "finalizers")
        }
        return stripped

    return strip(old) != strip(new)


def truncate_message(message: str) -> str:
    """kube-scheduler's truncateMessage: an event note is at most NoteLengthLimit bytes."""
    data = message.encode()
    if len(data) <= NOTE_LENGTH_LIMIT:
        return message
    suffix = " ..."
    return data[: NOTE_LENGTH_LIMIT - len(suffix)].decode(errors="ignore") + suffix


def unschedulable_message(total: int, reasons: Counter[str]) -> str:
    if total == 0:
        return "no nodes available to schedule pods"
    parts = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    return (
        f"0/{total} nodes are available: {parts}. preemption: 0/{total} nodes are available: "
        f"{total} Preemption is not helpful for scheduling."
    )


class Scheduler(Controller):
    name = "scheduler"
    workers = 1  # kube-scheduler, too, schedules one pod at a time

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unschedulable: set[str] = set()
        self.recorder = self.ctx.event_recorder_for(DEFAULT_SCHEDULER)

    def initial_keys(self) -> Iterable[str]:
        return list(self.cache.unbound_pods)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        if kind == PODS:
            if new is not None and self._wants(new):
                if (
                    old is not None
                    and key_of(new) in self._unschedulable
                    and not pod_updated(old, new)
                ):
                    # The scheduling queue leaves an unschedulable pod where it is when only
                    # its status changed (its own PodScheduled condition, for one): no new
                    # attempt, so no second FailedScheduling event for the same cause.
                    return
                self.queue.add(key_of(new))
            elif (
                old is not None
                and node_name_of(old)
                and self._unschedulable
                and (new is None or not is_pod_active(new))
            ):
                # A bound pod went away or finished: capacity may have freed up.
                self._retry_unschedulable()
        elif kind == NODES and event != "DELETED":
            self._retry_unschedulable()

    def _retry_unschedulable(self) -> None:
        for key in list(self._unschedulable):
            self.queue.add(key)

    @staticmethod
    def _wants(pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return (
            not spec.get("nodeName")
            and is_pod_active(pod)
            and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == DEFAULT_SCHEDULER
        )

    def _choose(self, pod: Mapping[str, Any]) -> tuple[str | None, Counter[str]]:
        """Filter and score: a feasible node with the fewest pods, or why none fits.

        Nodes are visited by increasing load (the cache buckets them), so a
        pod that fits anywhere costs one check instead of one per node; a pod
        pinned to named nodes (DaemonSet pods) only looks at those. Ties are
        broken arbitrarily, as kube-scheduler breaks them at random.
        """
        nodes = self.cache[NODES].objects
        pinned = pinned_nodes(pod)
        if pinned is not None:
            candidates = [n for n in pinned if n in nodes]
            best = min(
                (
                    (self.cache.node_load.get(n, 0), n)
                    for n in candidates
                    if misfit(pod, nodes[n], load=self.cache.node_load.get(n, 0)) is None
                ),
                default=None,
            )
            if best is not None:
                return best[1], Counter()
        else:
            for load in sorted(self.cache.load_buckets):
                for name in self.cache.load_buckets[load]:
                    if misfit(pod, nodes[name], load=load) is None:
                        return name, Counter()
        # Nothing fits: every node's reason, for the scheduler's message.
        reasons: Counter[str] = Counter()
        for name, node in nodes.items():
            why = misfit(pod, node, load=self.cache.node_load.get(name, 0))
            reasons[why or "node(s) didn't match Pod's node affinity/selector"] += 1
        return None, reasons

    async def reconcile(self, key: str) -> None:
        pod = self.cache.get(PODS, key)
        if pod is None or not self._wants(pod):
            self._unschedulable.discard(key)
            return
        node, reasons = self._choose(pod)
        if node is None:
            self._unschedulable.add(key)
            message = unschedulable_message(len(self.cache[NODES].objects), reasons)
            self._failed(pod, message)
            await self._mark_unschedulable(pod, message)
            return
        self._unschedulable.discard(key)
        if await self._bind(pod, node):
            self.recorder.eventf(
                pod, None, NORMAL, "Scheduled", "Binding",
                f"Successfully assigned {namespace_of(pod)}/{name_of(pod)} to {node}",
            )

    def _failed(self, pod: Obj, message: str) -> None:
        """handleSchedulingFailure's event."""
        self.recorder.eventf(
            pod, None, WARNING, "FailedScheduling", "Scheduling", truncate_message(message)
        )

    async def _bind(self, pod: Obj, node: str) -> bool:
        """POST pods/binding, as kube-scheduler does; the API server sets spec.nodeName and
        PodScheduled=True. A pod bound or deleted meanwhile (409, 404) is left alone, after
        the FailedScheduling event kube-scheduler records for a failed binding cycle."""
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": name_of(pod),
                "namespace": namespace_of(pod),
                "uid": meta(pod).get("uid"),
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            await self.api.create(
                self.ctx.resource(PODS), binding, namespace=namespace_of(pod),
                subresource="binding",
            )
        except ApiError as err:
            if err.code not in (404, 409):
                raise
            log.debug("binding %s to %s: %s", key_of(pod), node, err.message)
            self._failed(pod, err.message)
            return False
        return True

    async def _mark_unschedulable(
        self, pod: Obj, message: str, *, reason: str = "Unschedulable"
    ) -> None:
        conditions = set_condition(
            list((pod.get("status") or {}).get("conditions") or []),
            kind="PodScheduled",
            status="False",
            reason=reason,
            message=message,
            at=rfc3339(now()),
            probe_time=True,
        )
        current = get_condition(pod, "PodScheduled")
        if (
            current is not None
            and current.get("message") == message
            and current.get("status") == "False"
        ):
            return
        status: dict[str, Any] = {"conditions": conditions}
        if not (pod.get("status") or {}).get("phase"):
            status["phase"] = "Pending"
        await write_status(self.api, self.ctx.resource(PODS), obj=pod, status=status)
