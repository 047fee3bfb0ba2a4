"""The ReplicaSet controller: keeps `spec.replicas` pods matching a template alive.

Follows kube's pkg/controller/replicaset: pods are created from the template
with `generateName: <rs>-` (the API server appends five random characters)
through `api.create`, so mutating admission webhooks see them exactly as on
a real cluster; surplus pods are deleted most-expendable first (unbound,
then pending, then not ready, then most recently ready, then youngest);
orphans matching the selector are adopted and owned pods that stopped
matching are released. Terminating and terminal pods do not count.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any

from kubesim.controllers.caching import PODS, REPLICASETS
from kubesim.controllers.labels import selector_matches
from kubesim.controllers.objects import (
    Obj,
    available_in,
    controller_ref,
    generation_of,
    is_pod_active,
    is_pod_ready,
    is_terminating,
    key_of,
    labels_of,
    meta,
    namespace_of,
    node_name_of,
    now,
    owner_reference,
    parse_time,
    pod_phase,
    ready_since,
    rfc3339,
    set_condition,
    uid_of,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.templates import generate_name_prefix, pod_from_template
from kubesim.controllers.workloads import (
    BURST_REPLICAS,
    claim,
    delete_ignoring_missing,
    omit_zero,
    slow_start,
    write_status,
)
from kubesim.statuses import ApiError

_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_order(pods: Iterable[Obj], limit: int | None = None) -> list[Obj]:
    """Pods sorted most expendable first (kube's controller.ActivePods ordering).

    With a limit, only that many are selected (a partial sort: scaling down a
    100,000-pod set 500 pods per sync must not sort it all every time).
    """

    def rank(pod: Obj) -> tuple[Any, ...]:
        since = ready_since(pod) if is_pod_ready(pod) else None
        restarts = sum(
            int(s.get("restartCount") or 0)
            for s in (pod.get("status") or {}).get("containerStatuses") or []
        )
        created = parse_time(meta(pod).get("creationTimestamp"))
        return (
            1 if node_name_of(pod) else 0,  # unassigned < assigned
            _PHASE_RANK.get(pod_phase(pod), 0),  # pending < unknown < running
            1 if is_pod_ready(pod) else 0,  # not ready < ready
            -(since.timestamp() if since else 0.0),  # ready for less time first
            -restarts,  # more restarts first
            -(created.timestamp() if created else 0.0),  # newer first
        )

    if limit is not None:
        return heapq.nsmallest(limit, pods, key=rank)
    return sorted(pods, key=rank)


class ReplicaSetController(Controller):
    name = "replicaset"
    workers = 4

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # ReplicaSet uid -> keys of its pods whose labels changed since its last sync
        # (only those can have stopped matching its selector); None: check them all.
        self._relabelled: dict[str, set[str] | None] = {}

    def initial_keys(self) -> Iterable[str]:
        for rs in self.cache[REPLICASETS].objects.values():
            self._relabelled[uid_of(rs)] = None
        return list(self.cache[REPLICASETS].objects)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        if kind == REPLICASETS:
            obj = new if new is not None else old
            assert obj is not None
            if new is None:
                self._relabelled.pop(uid_of(obj), None)
            elif old is None or (old.get("spec") or {}).get("selector") != (
                new.get("spec") or {}
            ).get("selector"):
                self._relabelled[uid_of(obj)] = None  # a new selector: check every pod
            self.queue.add(key_of(obj))
        elif kind == PODS:
            seen: set[str] = set()
            for pod in (old, new):
                if pod is None:
                    continue
                ref = controller_ref(pod)
                if ref is not None:
                    if ref.get("kind") == "ReplicaSet":
                        seen.add(f"{namespace_of(pod)}/{ref.get('name')}")
                elif new is not None and pod is new and not is_terminating(pod):
                    # An orphan: every ReplicaSet whose selector matches may adopt it.
                    seen.update(self._selecting(pod))
            if old is not None and new is not None and labels_of(old) != labels_of(new):
                ref = controller_ref(new)
                if ref is not None:
                    uid = str(ref.get("uid", ""))
                    if uid not in self._relabelled or self._relabelled[uid] is not None:
                        pending = self._relabelled.get(uid) or set()
                        pending.add(key_of(new))
                        self._relabelled[uid] = pending
            if (
                old is not None
                and new is not None
                and is_pod_active(old) == is_pod_active(new)
                and labels_of(old) == labels_of(new)
            ):
                # Only the pod's status moved (readiness): the ReplicaSet needs no pods
                # created or deleted, just a status refresh. A sync walks all of its
                # pods, so coalesce such refreshes for big ReplicaSets (a window that
                # grows with size: ~0 for hundreds of pods, 0.5 s at 100,000).
                for key in seen:
                    self.queue.add_after(key, self._status_delay(old))
                return
            for key in seen:
                self.queue.add(key)

    def _status_delay(self, pod: Obj) -> float:
        ref = controller_ref(pod)
        uid = str(ref.get("uid", "")) if ref is not None else ""
        return min(0.5, len(self.cache[PODS].by_owner.get(uid, ())) / 200_000)

    def _selecting(self, pod: Obj) -> list[str]:
        namespace = namespace_of(pod)
        return [
            key
            for key, rs in self.cache[REPLICASETS].objects.items()
            if namespace_of(rs) == namespace
            and selector_matches((rs.get("spec") or {}).get("selector"), labels_of(pod))
        ]

    async def reconcile(self, key: str) -> None:
        rs = self.cache.get(REPLICASETS, key)
        if rs is None:
            return  # its pods are garbage-collected through their ownerReferences
        pods_resource = self.ctx.resource(PODS)
        spec = rs.get("spec") or {}
        selector = spec.get("selector")
        namespace = namespace_of(rs)
        owner_ref = owner_reference(rs, api_version="apps/v1", kind="ReplicaSet")
        uid = uid_of(rs)
        # Claim: adopt matching orphans, release owned pods that stopped matching. Only
        # pods relabelled since the last sync can have stopped matching (pods are
        # created from a template the API server checked against the selector).
        relabelled = self._relabelled.pop(uid, None) if uid in self._relabelled else set()
        store = self.cache[PODS]
        suspects = (
            store.owned_by(uid)
            if relabelled is None
            else [store.objects[k] for k in relabelled if k in store.objects]
        )
        await claim(
            self.api,
            pods_resource,
            owner=rs,
            owner_ref=owner_ref,
            selector=selector,
            owned=suspects,
            orphans=[p for p in store.orphans_in(namespace) if is_pod_active(p)],
        )
        active_count, _ = self.cache.pod_counts(uid)
        wanted = int(spec.get("replicas", 1))
        failure: Exception | None = None
        if not is_terminating(rs) and active_count != wanted:
            try:
                await self._manage(rs, active_count, wanted=wanted, owner_ref=owner_ref)
            except ApiError as err:
                if err.code in (404, 409):
                    raise
                failure = err
            rs = self.cache.get(REPLICASETS, key) or rs
        await self._update_status(key, rs, failure=failure)
        if failure is not None:
            raise failure

    async def _manage(
        self, rs: Obj, active_count: int, *, wanted: int, owner_ref: dict[str, Any]
    ) -> None:
        pods_resource = self.ctx.resource(PODS)
        diff = active_count - wanted
        if diff < 0:
            count = min(-diff, BURST_REPLICAS)
            template = (rs.get("spec") or {}).get("template") or {}
            prefix = generate_name_prefix(str(meta(rs).get("name")))

            async def create(_: int) -> None:
                pod = pod_from_template(
                    template,
                    namespace=namespace_of(rs),
                    owner_ref=owner_ref,
                    generate_name=prefix,
                )
                await self.api.create(pods_resource, pod, namespace=namespace_of(rs))

            await slow_start(count, create)
            if -diff > count:
                self.queue.add(key_of(rs))  # the rest in the next sync, like kube's burst
        elif diff > 0:
            active = [p for p in self.cache[PODS].owned_by(uid_of(rs)) if is_pod_active(p)]
            doomed = deletion_order(active, min(diff, BURST_REPLICAS))

            async def delete(index: int) -> None:
                await delete_ignoring_missing(self.api, pods_resource, obj=doomed[index])

            await slow_start(len(doomed), delete)

    async def _update_status(self, key: str, rs: Obj, *, failure: Exception | None) -> None:
        spec = rs.get("spec") or {}
        uid = uid_of(rs)
        min_ready = int(spec.get("minReadySeconds") or 0)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        match_labels = (spec.get("selector") or {}).get("matchLabels") or {}
        at = now()
        replicas, ready = self.cache.pod_counts(uid)
        available = ready
        fully_labeled = replicas
        soonest: float | None = None
        extra_labels = {k: v for k, v in template_labels.items() if match_labels.get(k) != v}
        if min_ready or extra_labels:
            # The counters cannot answer these: walk the pods (rare: minReadySeconds, or
            # template labels beyond what the selector already guarantees).
            available = fully_labeled = 0
            for pod in self.cache[PODS].owned_by(uid):
                if not is_pod_active(pod):
                    continue
                labels = labels_of(pod)
                if all(labels.get(k) == v for k, v in extra_labels.items()):
                    fully_labeled += 1
                remaining = available_in(pod, min_ready, at=at)
                if remaining == 0:
                    available += 1
                elif remaining is not None:
                    soonest = remaining if soonest is None else min(soonest, remaining)
        if soonest is not None:
            # minReadySeconds: look again when the next ready pod becomes available.
            self.queue.add_after(key, soonest + 0.01)
        conditions = list((rs.get("status") or {}).get("conditions") or [])
        if failure is not None:
            conditions = set_condition(
                conditions,
                kind="ReplicaFailure",
                status="True",
                reason="FailedCreate",
                message=str(failure),
                at=rfc3339(at),
            )
        elif any(c.get("type") == "ReplicaFailure" for c in conditions):
            conditions = [c for c in conditions if c.get("type") != "ReplicaFailure"]
        # ReplicaSetStatus: replicas is always serialized, the counters are omitempty.
        status: dict[str, Any] = omit_zero(
            {
                "replicas": replicas,
                "fullyLabeledReplicas": fully_labeled,
                "readyReplicas": ready,
                "availableReplicas": available,
                "observedGeneration": generation_of(rs),
                "conditions": conditions,
            },
            keep=("replicas",),
        )
        await write_status(self.api, self.ctx.resource(REPLICASETS), obj=rs, status=status)
