"""The Deployment controller: rolls a pod template out through ReplicaSets.

Follows kube's pkg/controller/deployment. The ReplicaSet for the current
template is `<deployment>-<pod-template-hash>`, the hash being
controller.ComputeHash of the template plus status.collisionCount (bumped
when a different ReplicaSet already holds the name). Each new ReplicaSet
gets the next `deployment.kubernetes.io/revision`. RollingUpdate scales the
new ReplicaSet up within maxSurge and the old ones down as long as
`replicas - maxUnavailable` pods stay available; Recreate scales the old
ones to zero, waits until their pods are gone, then scales the new one up.
Old ReplicaSets are kept at zero replicas up to revisionHistoryLimit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from kubesim.controllers.caching import DEPLOYMENTS, PODS, REPLICASETS
from kubesim.controllers.labels import selector_is_empty, selector_matches
from kubesim.controllers.objects import (
    TERMINAL_PHASES,
    Obj,
    annotations_of,
    controller_ref,
    deep_copy,
    generation_of,
    get_condition,
    int_or_percent,
    is_terminating,
    key_of,
    labels_of,
    meta,
    name_of,
    namespace_of,
    now,
    owner_reference,
    parse_time,
    pod_phase,
    rfc3339,
    set_condition,
    sorted_by_creation,
    uid_of,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.templates import (
    POD_TEMPLATE_HASH,
    compute_hash,
    templates_equal_ignoring_hash,
)
from kubesim.controllers.workloads import (
    MERGE_PATCH,
    claim,
    delete_ignoring_missing,
    omit_zero,
    write_status,
)
from kubesim.statuses import ApiError

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations kube does not copy onto its ReplicaSets.
_NOT_COPIED = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    }
)


def revision_of(obj: Obj) -> int:
    try:
        return int(annotations_of(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def spec_replicas(obj: Obj) -> int:
    return int((obj.get("spec") or {}).get("replicas", 1))


def status_int(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as absolute numbers (deploymentutil.ResolveFenceposts)."""
    spec = deployment.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0, 0
    rolling = strategy.get("rollingUpdate") or {}
    desired = spec_replicas(deployment)
    surge = int_or_percent(rolling.get("maxSurge", "25%"), desired, round_up=True)
    unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
    if surge == 0 and unavailable == 0:
        # Both zero would deadlock a rollout; kube lets one pod be unavailable.
        unavailable = 1
    return surge, unavailable


def max_unavailable(deployment: Obj) -> int:
    desired = spec_replicas(deployment)
    if desired == 0:
        return 0
    _, unavailable = fenceposts(deployment)
    return min(unavailable, desired)


def find_new_replica_set(deployment: Obj, replica_sets: Iterable[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template equals the Deployment's, ignoring the hash label."""
    template = (deployment.get("spec") or {}).get("template") or {}
    for rs in sorted_by_creation(replica_sets):
        if templates_equal_ignoring_hash((rs.get("spec") or {}).get("template") or {}, template):
            return rs
    return None


class DeploymentController(Controller):
    name = "deployment"
    workers = 2

    def initial_keys(self) -> Iterable[str]:
        return list(self.cache[DEPLOYMENTS].objects)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if kind == DEPLOYMENTS:
            self.queue.add(key_of(obj))
        elif kind == REPLICASETS:
            keys: set[str] = set()
            for rs in (old, new):
                if rs is None:
                    continue
                ref = controller_ref(rs)
                if ref is not None:
                    if ref.get("kind") == "Deployment":
                        keys.add(f"{namespace_of(rs)}/{ref.get('name')}")
                elif rs is new:
                    keys.update(self._selecting(rs))
            for key in keys:
                self.queue.add(key)
        elif kind == PODS and event == "DELETED":
            # Recreate waits for old pods to be gone: a pod deletion may unblock it.
            ref = controller_ref(obj)
            if ref is None or ref.get("kind") != "ReplicaSet":
                return
            rs = self.cache.get(REPLICASETS, f"{namespace_of(obj)}/{ref.get('name')}")
            if rs is None:
                return
            owner = controller_ref(rs)
            if owner is not None and owner.get("kind") == "Deployment":
                self.queue.add(f"{namespace_of(rs)}/{owner.get('name')}")

    def _selecting(self, rs: Obj) -> list[str]:
        namespace = namespace_of(rs)
        return [
            key
            for key, d in self.cache[DEPLOYMENTS].objects.items()
            if namespace_of(d) == namespace
            and selector_matches((d.get("spec") or {}).get("selector"), labels_of(rs))
        ]

    # -- sync --------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        deployment = self.cache.get(DEPLOYMENTS, key)
        if deployment is None or is_terminating(deployment):
            return
        spec = deployment.get("spec") or {}
        selector = spec.get("selector")
        if selector_is_empty(selector):
            # kube refuses to act on a selector that selects everything.
            await self._write_status(deployment, None, old_rss=[], progressing=False)
            return
        rs_resource = self.ctx.resource(REPLICASETS)
        await claim(
            self.api,
            rs_resource,
            owner=deployment,
            owner_ref=owner_reference(deployment, api_version="apps/v1", kind="Deployment"),
            selector=selector,
            owned=self.cache[REPLICASETS].owned_by(uid_of(deployment)),
            orphans=self.cache[REPLICASETS].orphans_in(namespace_of(deployment)),
        )
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if spec.get("paused"):
            await self._sync_paused(deployment)
        elif strategy == "Recreate":
            await self._recreate(deployment)
        else:
            await self._rolling(deployment)
        deployment = self.cache.get(DEPLOYMENTS, key) or deployment
        new_rs, old_rss = self._replica_sets(deployment)
        await self._cleanup(deployment, old_rss)
        await self._write_status(deployment, new_rs, old_rss=old_rss, progressing=True)

    def _replica_sets(self, deployment: Obj) -> tuple[Obj | None, list[Obj]]:
        selector = (deployment.get("spec") or {}).get("selector")
        owned = [
            rs
            for rs in self.cache[REPLICASETS].owned_by(uid_of(deployment))
            if selector_matches(selector, labels_of(rs))
        ]
        new_rs = find_new_replica_set(deployment, owned)
        old = [rs for rs in owned if new_rs is None or uid_of(rs) != uid_of(new_rs)]
        return new_rs, sorted_by_creation(old)

    async def _sync_paused(self, deployment: Obj) -> None:
        new_rs, old_rss = self._replica_sets(deployment)
        if new_rs is not None and not any(spec_replicas(rs) for rs in old_rss):
            await self._scale(deployment, new_rs, replicas=spec_replicas(deployment))

    async def _rolling(self, deployment: Obj) -> None:
        _, old_rss = self._replica_sets(deployment)
        new_rs = await self._new_replica_set(deployment, old_rss, create=True)
        if new_rs is None:
            return
        if await self._reconcile_new(deployment, new_rs, old_rss=old_rss):
            return  # the ReplicaSet update event brings us back
        await self._reconcile_old(deployment, new_rs, old_rss=old_rss)

    async def _recreate(self, deployment: Obj) -> None:
        _, old_rss = self._replica_sets(deployment)
        new_rs = await self._new_replica_set(deployment, old_rss, create=False)
        scaled = False
        for rs in old_rss:
            if spec_replicas(rs) > 0:
                await self._scale(deployment, rs, replicas=0)
                scaled = True
        if scaled:
            return
        # Recreate guarantees no overlap: wait until no old pod is left that could run.
        for rs in old_rss:
            for pod in self.cache[PODS].owned_by(uid_of(rs)):
                if pod_phase(pod) not in TERMINAL_PHASES:
                    return
        if new_rs is None:
            new_rs = await self._new_replica_set(deployment, old_rss, create=True)
        if new_rs is not None:
            await self._scale(deployment, new_rs, replicas=spec_replicas(deployment))

    async def _reconcile_new(self, deployment: Obj, new_rs: Obj, *, old_rss: list[Obj]) -> bool:
        desired = spec_replicas(deployment)
        current = spec_replicas(new_rs)
        if current == desired:
            return False
        if current > desired:
            await self._scale(deployment, new_rs, replicas=desired)
            return True
        surge, _ = fenceposts(deployment)
        total = current + sum(spec_replicas(rs) for rs in old_rss)
        max_total = desired + surge
        if total >= max_total:
            return False
        await self._scale(
            deployment, new_rs, replicas=current + min(max_total - total, desired - current)
        )
        return True

    async def _reconcile_old(self, deployment: Obj, new_rs: Obj, *, old_rss: list[Obj]) -> bool:
        old_count = sum(spec_replicas(rs) for rs in old_rss)
        if old_count == 0:
            return False
        desired = spec_replicas(deployment)
        all_count = old_count + spec_replicas(new_rs)
        min_available = desired - max_unavailable(deployment)
        new_unavailable = spec_replicas(new_rs) - status_int(new_rs, "availableReplicas")
        max_scaled_down = all_count - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        olds = [deep_copy(rs) for rs in old_rss]
        # First scale away old pods that are not available anyway (cleanupUnhealthyReplicas).
        cleaned = 0
        for rs in olds:
            if cleaned >= max_scaled_down:
                break
            replicas = spec_replicas(rs)
            unhealthy = replicas - status_int(rs, "availableReplicas")
            if replicas == 0 or unhealthy <= 0:
                continue
            count = min(max_scaled_down - cleaned, unhealthy)
            await self._scale(deployment, rs, replicas=replicas - count)
            rs["spec"]["replicas"] = replicas - count
            cleaned += count
        # Then available old pods, as long as minAvailable pods stay available.
        available = status_int(new_rs, "availableReplicas") + sum(
            status_int(rs, "availableReplicas") for rs in old_rss
        )
        budget = available - min_available
        scaled = 0
        for rs in olds:
            if scaled >= budget:
                break
            replicas = spec_replicas(rs)
            if replicas == 0:
                continue
            count = min(replicas, budget - scaled)
            await self._scale(deployment, rs, replicas=replicas - count)
            scaled += count
        return cleaned + scaled > 0

    async def _scale(self, deployment: Obj, rs: Obj, *, replicas: int) -> None:
        surge, _ = fenceposts(deployment)
        desired = spec_replicas(deployment)
        annotations = {
            DESIRED_REPLICAS: str(desired),
            MAX_REPLICAS: str(desired + surge),
        }
        min_ready = (deployment.get("spec") or {}).get("minReadySeconds", 0)
        current = self.cache.get(REPLICASETS, key_of(rs)) or rs
        if (
            spec_replicas(current) == replicas
            and all(annotations_of(current).get(k) == v for k, v in annotations.items())
            and (current.get("spec") or {}).get("minReadySeconds", 0) == min_ready
        ):
            return
        updated = deep_copy(current)
        updated["spec"]["replicas"] = replicas
        updated["spec"]["minReadySeconds"] = min_ready
        updated["metadata"].setdefault("annotations", {}).update(annotations)
        await self.api.update(self.ctx.resource(REPLICASETS), updated)

    async def _new_replica_set(
        self, deployment: Obj, old_rss: list[Obj], *, create: bool
    ) -> Obj | None:
        """getNewReplicaSet: find (and bring the revision of) or create the current RS."""
        owned = self.cache[REPLICASETS].owned_by(uid_of(deployment))
        existing = find_new_replica_set(deployment, owned)
        max_old = max((revision_of(rs) for rs in old_rss), default=0)
        revision = str(max_old + 1)
        if existing is not None:
            if revision_of(existing) < max_old + 1:
                # A rollback to an old template: that ReplicaSet becomes the newest revision.
                updated = deep_copy(existing)
                updated["metadata"].setdefault("annotations", {})[REVISION] = revision
                existing = await self.api.update(self.ctx.resource(REPLICASETS), updated)
            await self._set_deployment_revision(deployment, annotations_of(existing)[REVISION])
            return existing
        if not create:
            return None
        spec = deployment.get("spec") or {}
        collisions = (deployment.get("status") or {}).get("collisionCount")
        template = deep_copy(spec.get("template") or {})
        pod_hash = compute_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[POD_TEMPLATE_HASH] = pod_hash
        selector = deep_copy(spec.get("selector") or {})
        selector.setdefault("matchLabels", {})[POD_TEMPLATE_HASH] = pod_hash
        surge, _ = fenceposts(deployment)
        desired = spec_replicas(deployment)
        strategy = (spec.get("strategy") or {}).get("type", "RollingUpdate")
        if strategy == "RollingUpdate":
            current = sum(spec_replicas(rs) for rs in old_rss)
            replicas = max(0, min(desired + surge - current, desired))
        else:
            replicas = desired
        annotations = {k: v for k, v in annotations_of(deployment).items() if k not in _NOT_COPIED}
        annotations.update(
            {REVISION: revision, DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(desired + surge)}
        )
        name = f"{name_of(deployment)}-{pod_hash}"
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": namespace_of(deployment),
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [
                    owner_reference(deployment, api_version="apps/v1", kind="Deployment")
                ],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": spec.get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        rs_resource = self.ctx.resource(REPLICASETS)
        try:
            created = await self.api.create(rs_resource, rs, namespace=namespace_of(deployment))
        except ApiError as err:
            if err.reason != "AlreadyExists":
                raise
            other = self.api.get(rs_resource, namespace=namespace_of(deployment), name=name)
            ref = controller_ref(other)
            if (
                ref is not None
                and ref.get("uid") == uid_of(deployment)
                and templates_equal_ignoring_hash(
                    (other.get("spec") or {}).get("template") or {}, spec.get("template") or {}
                )
            ):
                return other
            # A hash collision: bump collisionCount so the next hash differs, and retry.
            await write_status(
                self.api,
                self.ctx.resource(DEPLOYMENTS),
                obj=deployment,
                status={"collisionCount": int(collisions or 0) + 1},
            )
            raise
        await self._set_deployment_revision(deployment, revision)
        await self._set_progressing(
            deployment,
            reason="NewReplicaSetCreated",
            message=f'Created new replica set "{name}"',
        )
        return created

    async def _set_deployment_revision(self, deployment: Obj, revision: str) -> None:
        current = self.cache.get(DEPLOYMENTS, key_of(deployment)) or deployment
        if annotations_of(current).get(REVISION) == revision:
            return
        await self.api.patch(
            self.ctx.resource(DEPLOYMENTS),
            namespace=namespace_of(current),
            name=name_of(current),
            patch={"metadata": {"annotations": {REVISION: revision}}},
            patch_type=MERGE_PATCH,
        )

    async def _set_progressing(self, deployment: Obj, *, reason: str, message: str) -> None:
        current = self.cache.get(DEPLOYMENTS, key_of(deployment)) or deployment
        conditions = set_condition(
            list((current.get("status") or {}).get("conditions") or []),
            kind="Progressing",
            status="True",
            reason=reason,
            message=message,
            at=rfc3339(now()),
            update_time=True,
        )
        await write_status(
            self.api, self.ctx.resource(DEPLOYMENTS), obj=current, status={"conditions": conditions}
        )

    async def _cleanup(self, deployment: Obj, old_rss: list[Obj]) -> None:
        """Delete old ReplicaSets beyond revisionHistoryLimit (only fully scaled-down ones)."""
        limit = int((deployment.get("spec") or {}).get("revisionHistoryLimit", 10))
        cleanable = [
            rs
            for rs in old_rss
            if spec_replicas(rs) == 0
            and status_int(rs, "replicas") == 0
            and not is_terminating(rs)
            and generation_of(rs) <= status_int(rs, "observedGeneration")
        ]
        excess = len(cleanable) - limit
        if excess <= 0:
            return
        cleanable.sort(key=lambda rs: (revision_of(rs), meta(rs).get("creationTimestamp") or ""))
        for rs in cleanable[:excess]:
            await delete_ignoring_missing(self.api, self.ctx.resource(REPLICASETS), obj=rs)

    async def _write_status(
        self, deployment: Obj, new_rs: Obj | None, *, old_rss: list[Obj], progressing: bool
    ) -> None:
        all_rss = ([new_rs] if new_rs is not None else []) + old_rss
        desired = spec_replicas(deployment)
        available = sum(status_int(rs, "availableReplicas") for rs in all_rss)
        total = sum(spec_replicas(rs) for rs in all_rss)
        previous = deployment.get("status") or {}
        status: dict[str, Any] = {
            "observedGeneration": generation_of(deployment),
            "replicas": sum(status_int(rs, "replicas") for rs in all_rss),
            "updatedReplicas": status_int(new_rs, "replicas") if new_rs is not None else 0,
            "readyReplicas": sum(status_int(rs, "readyReplicas") for rs in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(total - available, 0),
        }
        at = now()
        stamp = rfc3339(at)
        conditions = list(previous.get("conditions") or [])
        if available >= desired - max_unavailable(deployment):
            conditions = set_condition(
                conditions,
                kind="Available",
                status="True",
                reason="MinimumReplicasAvailable",
                message="Deployment has minimum availability.",
                at=stamp,
                update_time=True,
            )
        else:
            conditions = set_condition(
                conditions,
                kind="Available",
                status="False",
                reason="MinimumReplicasUnavailable",
                message="Deployment does not have minimum availability.",
                at=stamp,
                update_time=True,
            )
        if progressing and new_rs is not None:
            conditions = self._progress(
                deployment,
                new_rs=new_rs,
                status=status,
                previous=previous,
                conditions=conditions,
                at=at,
            )
        # kube lists them in this order (Available first, then Progressing)
        order = {"Available": 0, "Progressing": 1, "ReplicaFailure": 2}
        status["conditions"] = sorted(conditions, key=lambda c: order.get(c.get("type", ""), 3))
        await write_status(
            self.api, self.ctx.resource(DEPLOYMENTS), obj=deployment, status=omit_zero(status)
        )

    def _progress(
        self,
        deployment: Obj,
        *,
        new_rs: Obj,
        status: dict[str, Any],
        previous: dict[str, Any],
        conditions: list[dict[str, Any]],
        at: dt.datetime,
    ) -> list[dict[str, Any]]:
        """syncRolloutStatus: the Progressing condition and the progress deadline timer."""
        spec = deployment.get("spec") or {}
        desired = spec_replicas(deployment)
        stamp = rfc3339(at)
        rs_name = name_of(new_rs)
        complete = (
            status["updatedReplicas"] == desired
            and status["replicas"] == desired
            and status["availableReplicas"] == desired
        )
        current = get_condition({"status": {"conditions": conditions}}, "Progressing")
        if complete:
            return set_condition(
                conditions,
                kind="Progressing",
                status="True",
                reason="NewReplicaSetAvailable",
                message=f'ReplicaSet "{rs_name}" has successfully progressed.',
                at=stamp,
                update_time=True,
            )
        moved = (
            status["updatedReplicas"] > int(previous.get("updatedReplicas") or 0)
            or status["readyReplicas"] > int(previous.get("readyReplicas") or 0)
            or status["availableReplicas"] > int(previous.get("availableReplicas") or 0)
            or status["replicas"] - status["updatedReplicas"]
            < int(previous.get("replicas") or 0) - int(previous.get("updatedReplicas") or 0)
        )
        if moved or current is None:
            return set_condition(
                conditions,
                kind="Progressing",
                status="True",
                reason="ReplicaSetUpdated",
                message=f'ReplicaSet "{rs_name}" is progressing.',
                at=stamp,
                update_time=True,
            )
        deadline = spec.get("progressDeadlineSeconds", 600)
        if deadline is None or current.get("reason") == "ProgressDeadlineExceeded":
            return conditions
        last = parse_time(current.get("lastUpdateTime")) or at
        remaining = (last - at).total_seconds() + int(deadline)
        if remaining <= 0:
            return set_condition(
                conditions,
                kind="Progressing",
                status="False",
                reason="ProgressDeadlineExceeded",
                message=f'ReplicaSet "{rs_name}" has timed out progressing.',
                at=stamp,
                update_time=True,
            )
        # progressDeadlineSeconds is a real timer: check again when it would expire.
        self.queue.add_after(key_of(deployment), remaining + 0.01)
        return conditions
