"""The StatefulSet controller: pods with stable names, created and removed in order.

Pods are `<set>-<ordinal>` (ordinals from spec.ordinals.start, default 0),
labelled statefulset.kubernetes.io/pod-name, apps.kubernetes.io/pod-index
and controller-revision-hash (`<set>-<template hash>`), with hostname and
subdomain set for the governing Service. With the default OrderedReady
policy an ordinal is created only once every lower one is Running and
Ready, scale-down removes the highest ordinal first and one at a time, and
a rolling update replaces pods from the highest ordinal down (honouring
the partition); Parallel creates and deletes without waiting. A deleted or
failed pod is recreated under the same name.

kubesim has no ControllerRevision or PersistentVolumeClaim objects: pods
are always created from the current template, and volumeClaimTemplates only
become the pod volumes that reference `<claim>-<pod>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kubesim.controllers.caching import PODS, STATEFULSETS
from kubesim.controllers.labels import selector_matches
from kubesim.controllers.objects import (
    TERMINAL_PHASES,
    Obj,
    available_in,
    generation_of,
    is_pod_ready,
    is_terminating,
    key_of,
    labels_of,
    name_of,
    namespace_of,
    now,
    owner_reference,
    pod_phase,
    uid_of,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.templates import (
    CONTROLLER_REVISION_HASH,
    compute_hash,
    pod_from_template,
)
from kubesim.controllers.workloads import (
    claim,
    delete_ignoring_missing,
    omit_zero,
    owners_to_sync,
    write_status,
)
from kubesim.statuses import ApiError

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal_of(set_name: str, pod_name: str) -> int | None:
    match = re.fullmatch(re.escape(set_name) + r"-(\d+)", pod_name)
    return int(match.group(1)) if match else None


def running_and_ready(pod: Obj) -> bool:
    return pod_phase(pod) == "Running" and is_pod_ready(pod)


class StatefulSetController(Controller):
    name = "statefulset"
    workers = 2

    def initial_keys(self) -> Iterable[str]:
        return list(self.cache[STATEFULSETS].objects)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if kind == STATEFULSETS:
            self.queue.add(key_of(obj))
        elif kind == PODS:
            for key in owners_to_sync(old, new, owner_kind="StatefulSet",
                                      owners=self.cache[STATEFULSETS].objects):
                self.queue.add(key)

    async def reconcile(self, key: str) -> None:
        sts = self.cache.get(STATEFULSETS, key)
        if sts is None:
            return
        spec = sts.get("spec") or {}
        set_name = name_of(sts)
        owner_ref = owner_reference(sts, api_version="apps/v1", kind="StatefulSet")
        collisions = (sts.get("status") or {}).get("collisionCount")
        revision = f"{set_name}-{compute_hash(spec.get('template') or {}, collisions)}"
        await claim(
            self.api,
            self.ctx.resource(PODS),
            owner=sts,
            owner_ref=owner_ref,
            selector=spec.get("selector"),
            owned=self.cache[PODS].owned_by(uid_of(sts)),
            orphans=self.cache[PODS].orphans_in(namespace_of(sts)),
            # only pods named like members of this set are adopted (isMemberOf)
            can_adopt=lambda pod: ordinal_of(set_name, name_of(pod)) is not None,
        )
        if not is_terminating(sts):
            await self._manage(sts, revision, owner_ref=owner_ref)
        sts = self.cache.get(STATEFULSETS, key) or sts
        await self._update_status(sts, revision)

    def _members(self, sts: Obj) -> dict[int, Obj]:
        selector = (sts.get("spec") or {}).get("selector")
        out: dict[int, Obj] = {}
        for pod in self.cache[PODS].owned_by(uid_of(sts)):
            ordinal = ordinal_of(name_of(sts), name_of(pod))
            if ordinal is not None and selector_matches(selector, labels_of(pod)):
                out[ordinal] = pod
        return out

    async def _manage(self, sts: Obj, revision: str, *, owner_ref: dict[str, Any]) -> None:
        spec = sts.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        start = int((spec.get("ordinals") or {}).get("start", 0))
        ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
        members = self._members(sts)
        wanted = range(start, start + replicas)
        pods = self.ctx.resource(PODS)
        # 1. Make every wanted ordinal exist and run, lowest first.
        for ordinal in wanted:
            pod = members.get(ordinal)
            if pod is None:
                await self._create(sts, ordinal, revision=revision, owner_ref=owner_ref)
                if ordered:
                    return  # wait for it to become Running and Ready
                continue
            if is_terminating(pod):
                if ordered:
                    return  # recreated once the old incarnation is gone
                continue
            if pod_phase(pod) in TERMINAL_PHASES:
                await delete_ignoring_missing(self.api, pods, obj=pod)
                if ordered:
                    return
                continue
            if ordered and not running_and_ready(pod):
                return
        # 2. Scale down: condemned ordinals, highest first.
        condemned = sorted((o for o in members if o not in wanted), reverse=True)
        for ordinal in condemned:
            pod = members[ordinal]
            if is_terminating(pod):
                if ordered:
                    return
                continue
            if ordered and not all(running_and_ready(members[o]) for o in wanted if o in members):
                return
            await delete_ignoring_missing(self.api, pods, obj=pod)
            if ordered:
                return
        # 3. Rolling update: replace old-revision pods from the highest ordinal down.
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        for ordinal in sorted(wanted, reverse=True):
            if ordinal < partition:
                break
            pod = members.get(ordinal)
            if pod is None or is_terminating(pod):
                return
            if labels_of(pod).get(CONTROLLER_REVISION_HASH) != revision:
                await delete_ignoring_missing(self.api, pods, obj=pod)
                return  # one at a time; its replacement must become ready first
            if not running_and_ready(pod):
                return

    async def _create(
        self, sts: Obj, ordinal: int, *, revision: str, owner_ref: dict[str, Any]
    ) -> None:
        spec = sts.get("spec") or {}
        pod_name = f"{name_of(sts)}-{ordinal}"
        pod = pod_from_template(
            spec.get("template") or {},
            namespace=namespace_of(sts),
            owner_ref=owner_ref,
            name=pod_name,
            extra_labels={
                POD_NAME_LABEL: pod_name,
                POD_INDEX_LABEL: str(ordinal),
                CONTROLLER_REVISION_HASH: revision,
            },
        )
        pod_spec = pod["spec"]
        pod_spec["hostname"] = pod_name
        if spec.get("serviceName"):
            pod_spec["subdomain"] = spec["serviceName"]
        volumes = list(pod_spec.get("volumes") or [])
        names = {v.get("name") for v in volumes}
        for claim_template in spec.get("volumeClaimTemplates") or []:
            claim_name = (claim_template.get("metadata") or {}).get("name")
            if claim_name and claim_name not in names:
                volumes.append(
                    {
                        "name": claim_name,
                        "persistentVolumeClaim": {"claimName": f"{claim_name}-{pod_name}"},
                    }
                )
        if volumes:
            pod_spec["volumes"] = volumes
        try:
            await self.api.create(self.ctx.resource(PODS), pod, namespace=namespace_of(sts))
        except ApiError as err:
            if err.reason != "AlreadyExists":
                raise
            # The old incarnation is still there (being deleted): its deletion requeues us.

    async def _update_status(self, sts: Obj, revision: str) -> None:
        members = [p for p in self._members(sts).values() if not is_terminating(p)]
        min_ready = int((sts.get("spec") or {}).get("minReadySeconds") or 0)
        at = now()
        ready = sum(1 for p in members if is_pod_ready(p))
        available = 0
        soonest: float | None = None
        for pod in members:
            wait = available_in(pod, min_ready, at=at)
            if wait == 0:
                available += 1
            elif wait is not None:
                soonest = wait if soonest is None else min(soonest, wait)
        if soonest is not None:
            self.queue.add_after(key_of(sts), soonest + 0.01)
        updated = sum(1 for p in members if labels_of(p).get(CONTROLLER_REVISION_HASH) == revision)
        previous = sts.get("status") or {}
        current_revision = previous.get("currentRevision") or revision
        replicas = int((sts.get("spec") or {}).get("replicas", 1))
        if updated == len(members) and len(members) >= replicas:
            current_revision = revision  # the rollout is complete
        current = sum(
            1 for p in members if labels_of(p).get(CONTROLLER_REVISION_HASH) == current_revision
        )
        status = omit_zero(
            {
                "observedGeneration": generation_of(sts),
                "replicas": len(members),
                "readyReplicas": ready,
                "currentReplicas": current,
                "updatedReplicas": updated,
                "availableReplicas": available,
                "currentRevision": current_revision,
                "updateRevision": revision,
                "collisionCount": int(previous.get("collisionCount") or 0),
            },
            keep=("replicas", "collisionCount"),
        )
        await write_status(self.api, self.ctx.resource(STATEFULSETS), obj=sts, status=status)
