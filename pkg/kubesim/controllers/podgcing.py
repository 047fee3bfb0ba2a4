"""Pod garbage collection for nodes that are gone (kube's pod GC controller).

When a Node object is deleted, the pods bound to it would otherwise stay
forever (no kubelet will ever finish them), and their owners would never
replace them. Like kube's podgc, kubesim marks each such pod Failed with a
DisruptionTarget condition (so a Job counts it as a failure rather than
losing it) and force-deletes it (grace period 0); the owning ReplicaSet,
DaemonSet, StatefulSet or Job then reacts as on a real cluster. Pods bound
to a node that never existed are collected after kube's 40 s quarantine.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubesim.controllers.caching import NODES, PODS
from kubesim.controllers.objects import (
    TERMINAL_PHASES,
    Obj,
    node_name_of,
    now,
    pod_phase,
    rfc3339,
    set_condition,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.workloads import delete_ignoring_missing, write_status
from kubesim.statuses import ApiError

# podgc's quarantineTime: how long a pod may claim an unknown node before it is collected.
QUARANTINE_SECONDS = 40.0


class PodGarbageCollector(Controller):
    name = "podgc"
    workers = 2

    def initial_keys(self) -> Iterable[str]:
        return []

    def start(self) -> None:
        super().start()
        nodes = self.cache[NODES].objects
        for node in list(self.cache.pods_by_node):
            if node not in nodes:
                self.queue.add_after(node, QUARANTINE_SECONDS)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        if kind == NODES and event == "DELETED" and old is not None:
            self.queue.add(str((old.get("metadata") or {}).get("name")))
        elif kind == PODS and new is not None:
            node = node_name_of(new)
            if node and node not in self.cache[NODES].objects:
                self.queue.add_after(node, QUARANTINE_SECONDS)

    async def reconcile(self, key: str) -> None:
        if key in self.cache[NODES].objects:
            return
        pods = self.ctx.resource(PODS)
        for pod in self.cache.pods_on(key):
            if pod_phase(pod) not in TERMINAL_PHASES:
                conditions = set_condition(
                    list((pod.get("status") or {}).get("conditions") or []),
                    kind="DisruptionTarget",
                    status="True",
                    reason="DeletionByPodGC",
                    message="PodGC: node no longer exists",
                    at=rfc3339(now()),
                    probe_time=True,
                )
                status: dict[str, Any] = {"phase": "Failed", "conditions": conditions}
                try:
                    await write_status(self.api, pods, obj=pod, status=status)
                except ApiError as err:
                    if err.code == 404:
                        continue
                    if err.code != 409:  # a conflict: delete anyway, as podgc does
                        raise
            await delete_ignoring_missing(self.api, pods, obj=pod, grace_period_seconds=0)
