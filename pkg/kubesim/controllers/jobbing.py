"""The Job controller: runs pods until enough of them succeed.

Follows kube's pkg/controller/job for NonIndexed jobs. Pods are created from
the template with `generateName: <job>-`, the labels
batch.kubernetes.io/job-name, job-name, batch.kubernetes.io/controller-uid
and controller-uid, and the `batch.kubernetes.io/job-tracking` finalizer:
since 1.26 kube counts finished pods through that finalizer, recording a
terminal pod's uid in status.uncountedTerminatedPods, removing the
finalizer, then moving the uid into status.succeeded/failed, so a pod that
disappears (pod GC, a deleted node) is never lost or counted twice.

At most `parallelism` pods run, until `completions` succeeded
(Complete, after SuccessCriteriaMet) or more than `backoffLimit` failed
(Failed with BackoffLimitExceeded, after FailureTarget; for OnFailure pods
container restarts count as failures); activeDeadlineSeconds fails a job
with DeadlineExceeded, `suspend` removes its pods, and
ttlSecondsAfterFinished deletes a finished job. A replacement pod after a
failure waits for the pod failure back-off (10 s doubling to 6 min).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from kubesim.controllers.caching import JOBS, PODS
from kubesim.controllers.objects import (
    Obj,
    condition_true,
    controller_ref,
    is_pod_active,
    is_pod_ready,
    is_terminating,
    key_of,
    meta,
    name_of,
    namespace_of,
    now,
    owner_reference,
    parse_time,
    pod_phase,
    rfc3339,
    set_condition,
    uid_of,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.replicating import deletion_order
from kubesim.controllers.templates import generate_name_prefix, pod_from_template
from kubesim.controllers.workloads import (
    MERGE_PATCH,
    delete_ignoring_missing,
    slow_start,
    write_status,
)
from kubesim.statuses import ApiError

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
LEGACY_JOB_NAME_LABEL = "job-name"
LEGACY_CONTROLLER_UID_LABEL = "controller-uid"
DEFAULT_BACKOFF_LIMIT = 6
MAX_POD_FAILURE_BACKOFF = 360.0
_ORPHAN_PREFIX = "pod:"


def job_finished(job: Obj) -> bool:
    return condition_true(job, "Complete") or condition_true(job, "Failed")


class JobController(Controller):
    name = "job"
    workers = 2

    def __init__(self, ctx: Any, *, pod_failure_backoff: float = 10.0) -> None:
        super().__init__(ctx)
        self.pod_failure_backoff = pod_failure_backoff
        # job uid -> when a failed pod was last counted (the pod failure back-off's clock)
        self._last_failure: dict[str, dt.datetime] = {}

    def initial_keys(self) -> Iterable[str]:
        keys = list(self.cache[JOBS].objects)
        for pod in self.cache.all(PODS):
            if self._orphaned_tracking(pod):
                keys.append(_ORPHAN_PREFIX + key_of(pod))
        return keys

    def _orphaned_tracking(self, pod: Obj) -> bool:
        """A pod still holding our finalizer whose Job is gone (or was replaced)."""
        if TRACKING_FINALIZER not in (meta(pod).get("finalizers") or []):
            return False
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "Job":
            return True
        job = self.cache.get(JOBS, f"{namespace_of(pod)}/{ref.get('name')}")
        return job is None or uid_of(job) != ref.get("uid")

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if kind == JOBS:
            self.queue.add(key_of(obj))
            if event == "DELETED":
                # Its pods keep their finalizer until we drop it.
                for pod in self.cache[PODS].owned_by(uid_of(obj)):
                    self.queue.add(_ORPHAN_PREFIX + key_of(pod))
        elif kind == PODS:
            ref = controller_ref(obj)
            if ref is not None and ref.get("kind") == "Job":
                self.queue.add(f"{namespace_of(obj)}/{ref.get('name')}")
            if new is not None and self._orphaned_tracking(new):
                self.queue.add(_ORPHAN_PREFIX + key_of(new))

    async def reconcile(self, key: str) -> None:
        if key.startswith(_ORPHAN_PREFIX):
            await self._release_orphan(key[len(_ORPHAN_PREFIX) :])
            return
        job = self.cache.get(JOBS, key)
        if job is None:
            return
        pods = self.cache[PODS].owned_by(uid_of(job))
        if job_finished(job) or is_terminating(job):
            await self._drop_finalizers(pods)
            await self._delete_active(pods)
            await self._expire(job)
            return
        job = await self._track(job, pods)
        pods = self.cache[PODS].owned_by(uid_of(job))
        await self._sync(job, pods)

    async def _release_orphan(self, pod_key: str) -> None:
        pod = self.cache.get(PODS, pod_key)
        if pod is not None and self._orphaned_tracking(pod):
            await self._drop_finalizers([pod])

    async def _drop_finalizers(self, pods: Iterable[Obj]) -> None:
        for pod in pods:
            finalizers = list(meta(pod).get("finalizers") or [])
            if TRACKING_FINALIZER not in finalizers:
                continue
            remaining = [f for f in finalizers if f != TRACKING_FINALIZER]
            try:
                await self.api.patch(
                    self.ctx.resource(PODS),
                    namespace=namespace_of(pod),
                    name=name_of(pod),
                    patch={
                        "metadata": {
                            "finalizers": remaining or None,
                            "resourceVersion": meta(pod).get("resourceVersion"),
                        }
                    },
                    patch_type=MERGE_PATCH,
                )
            except ApiError as err:
                if err.code != 404:
                    raise

    async def _delete_active(self, pods: Iterable[Obj]) -> None:
        for pod in pods:
            if is_pod_active(pod):
                await delete_ignoring_missing(self.api, self.ctx.resource(PODS), obj=pod)

    async def _track(self, job: Obj, pods: list[Obj]) -> Obj:
        """Count finished pods through the tracking finalizer.

        kube's trackJobStatusAndRemoveFinalizers, in three level-based steps.
        """
        status = job.get("status") or {}
        uncounted = status.get("uncountedTerminatedPods") or {}
        succeeded_uids = list(uncounted.get("succeeded") or [])
        failed_uids = list(uncounted.get("failed") or [])
        known = set(succeeded_uids) | set(failed_uids)
        finished_with_finalizer: list[Obj] = []
        added = False
        for pod in pods:
            if TRACKING_FINALIZER not in (meta(pod).get("finalizers") or []):
                continue
            phase = pod_phase(pod)
            if phase not in ("Succeeded", "Failed"):
                if not is_terminating(pod):
                    continue
                # isPodFailed: a deleted pod that did not succeed counts as failed, so an
                # orphan that never reaches a terminal phase is not waited for forever.
                phase = "Failed"
            finished_with_finalizer.append(pod)
            if uid_of(pod) not in known:
                (succeeded_uids if phase == "Succeeded" else failed_uids).append(uid_of(pod))
                added = True
        jobs = self.ctx.resource(JOBS)
        if added:
            # 1. record the uids before the finalizers go, so nothing is lost on a crash
            job = await write_status(
                self.api,
                jobs,
                obj=job,
                status={
                    "uncountedTerminatedPods": _uncounted(succeeded_uids, failed_uids),
                },
            )
        # 2. release the pods
        await self._drop_finalizers(finished_with_finalizer)
        # 3. move uids whose pods no longer hold the finalizer into the counters
        holding = {
            uid_of(p)
            for p in self.cache[PODS].owned_by(uid_of(job))
            if TRACKING_FINALIZER in (meta(p).get("finalizers") or [])
        }
        moved_ok = [u for u in succeeded_uids if u not in holding]
        moved_failed = [u for u in failed_uids if u not in holding]
        if moved_ok or moved_failed:
            current = self.cache.get(JOBS, key_of(job)) or job
            current_status = current.get("status") or {}
            if moved_failed:
                self._last_failure[uid_of(job)] = now()
            job = await write_status(
                self.api,
                jobs,
                obj=current,
                status={
                    "succeeded": int(current_status.get("succeeded") or 0) + len(moved_ok),
                    "failed": int(current_status.get("failed") or 0) + len(moved_failed),
                    "uncountedTerminatedPods": _uncounted(
                        [u for u in succeeded_uids if u in holding],
                        [u for u in failed_uids if u in holding],
                    ),
                },
            )
        return job

    async def _sync(self, job: Obj, pods: list[Obj]) -> None:
        key = key_of(job)
        spec = job.get("spec") or {}
        status = dict(job.get("status") or {})
        at = now()
        stamp = rfc3339(at)
        active = [p for p in pods if is_pod_active(p)]
        uncounted = status.get("uncountedTerminatedPods") or {}
        succeeded = int(status.get("succeeded") or 0)
        failed = int(status.get("failed") or 0)
        pending_ok = len(uncounted.get("succeeded") or [])
        pending_failed = len(uncounted.get("failed") or [])
        restarts = 0
        if (spec.get("template") or {}).get("spec", {}).get("restartPolicy") == "OnFailure":
            restarts = sum(
                int(cs.get("restartCount") or 0)
                for p in active
                for cs in (p.get("status") or {}).get("containerStatuses") or []
            )
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        backoff_limit = int(spec.get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        suspended = bool(spec.get("suspend"))
        conditions = list(status.get("conditions") or [])
        update: dict[str, Any] = {}
        if not suspended and not status.get("startTime"):
            update["startTime"] = stamp
            status["startTime"] = stamp
        started = parse_time(status.get("startTime"))

        failure: tuple[str, str] | None = None
        if failed + pending_failed + restarts > backoff_limit:
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        if failure is None and deadline is not None and started is not None and not suspended:
            left = (started + dt.timedelta(seconds=int(deadline)) - at).total_seconds()
            if left <= 0:
                failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                self.queue.add_after(key, left + 0.01)

        complete = False
        total_ok = succeeded + pending_ok
        if completions is not None:
            complete = total_ok >= int(completions)
            want = max(min(parallelism, int(completions) - total_ok), 0)
        else:
            # A "work queue" job: done when one pod succeeded and none is left running.
            complete = total_ok > 0 and not active
            want = 0 if total_ok > 0 else parallelism
        if suspended or failure is not None:
            want = 0

        pods_resource = self.ctx.resource(PODS)
        if len(active) > want:
            doomed = deletion_order(active, len(active) - want)
            for pod in doomed:
                await delete_ignoring_missing(self.api, pods_resource, obj=pod)
        elif len(active) < want and not complete:
            delay = self._failure_delay(job, failed + pending_failed, at=at)
            if delay > 0:
                self.queue.add_after(key, delay)
            else:
                await self._create_pods(job, want - len(active))

        if suspended:
            conditions = set_condition(
                conditions,
                kind="Suspended",
                status="True",
                reason="JobSuspended",
                message="Job suspended",
                at=stamp,
            )
        elif any(c.get("type") == "Suspended" for c in conditions):
            conditions = set_condition(
                conditions,
                kind="Suspended",
                status="False",
                reason="JobResumed",
                message="Job resumed",
                at=stamp,
            )
        settled = not (uncounted.get("succeeded") or uncounted.get("failed"))
        if failure is not None:
            reason, message = failure
            conditions = set_condition(
                conditions,
                kind="FailureTarget",
                status="True",
                reason=reason,
                message=message,
                at=stamp,
                probe_time=True,
            )
            if settled and not active:
                conditions = set_condition(
                    conditions,
                    kind="Failed",
                    status="True",
                    reason=reason,
                    message=message,
                    at=stamp,
                    probe_time=True,
                )
        elif complete:
            conditions = set_condition(
                conditions,
                kind="SuccessCriteriaMet",
                status="True",
                reason="CompletionsReached",
                message="Reached expected number of succeeded pods",
                at=stamp,
                probe_time=True,
            )
            if settled and not active:
                conditions = set_condition(
                    conditions,
                    kind="Complete",
                    status="True",
                    reason="CompletionsReached",
                    message="Reached expected number of succeeded pods",
                    at=stamp,
                    probe_time=True,
                )
                update["completionTime"] = stamp
        current = [p for p in self.cache[PODS].owned_by(uid_of(job)) if is_pod_active(p)]
        update.update(
            {
                "active": len(current) or None,
                "ready": sum(1 for p in current if is_pod_ready(p)),
                "conditions": conditions or None,
                "uncountedTerminatedPods": uncounted or {},
            }
        )
        latest = self.cache.get(JOBS, key) or job
        await write_status(self.api, self.ctx.resource(JOBS), obj=latest, status=update)

    def _failure_delay(self, job: Obj, failures: int, *, at: dt.datetime) -> float:
        """The pod failure back-off before a replacement pod (10 s, 20 s, ... 6 min)."""
        if failures <= 0:
            return 0.0
        last = self._last_failure.get(uid_of(job))
        if last is None:
            return 0.0
        delay = min(self.pod_failure_backoff * 2 ** (failures - 1), MAX_POD_FAILURE_BACKOFF)
        return max((last + dt.timedelta(seconds=delay) - at).total_seconds(), 0.0)

    async def _create_pods(self, job: Obj, count: int) -> None:
        spec = job.get("spec") or {}
        owner_ref = owner_reference(job, api_version="batch/v1", kind="Job")
        labels = {
            CONTROLLER_UID_LABEL: uid_of(job),
            JOB_NAME_LABEL: name_of(job),
            LEGACY_CONTROLLER_UID_LABEL: uid_of(job),
            LEGACY_JOB_NAME_LABEL: name_of(job),
        }
        template = spec.get("template") or {}
        prefix = generate_name_prefix(name_of(job))
        pods = self.ctx.resource(PODS)

        async def create(_: int) -> None:
            pod = pod_from_template(
                template,
                namespace=namespace_of(job),
                owner_ref=owner_ref,
                generate_name=prefix,
                extra_labels=labels,
            )
            finalizers = pod["metadata"].setdefault("finalizers", [])
            if TRACKING_FINALIZER not in finalizers:
                finalizers.append(TRACKING_FINALIZER)
            await self.api.create(pods, pod, namespace=namespace_of(job))

        await slow_start(count, create)

    async def _expire(self, job: Obj) -> None:
        """ttlSecondsAfterFinished: the TTL-after-finished controller."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None or is_terminating(job):
            return
        finished_at = None
        for condition in (job.get("status") or {}).get("conditions") or []:
            finished = condition.get("type") in ("Complete", "Failed")
            if finished and condition.get("status") == "True":
                finished_at = parse_time(condition.get("lastTransitionTime"))
        if finished_at is None:
            return
        left = (finished_at + dt.timedelta(seconds=int(ttl)) - now()).total_seconds()
        if left > 0:
            self.queue.add_after(key_of(job), left + 0.01)
            return
        await delete_ignoring_missing(
            self.api, self.ctx.resource(JOBS), obj=job, propagation_policy="Background"
        )


def _uncounted(succeeded: list[str], failed: list[str]) -> dict[str, list[str]]:
    """status.uncountedTerminatedPods with Go's omitempty on both lists."""
    out: dict[str, list[str]] = {}
    if succeeded:
        out["succeeded"] = succeeded
    if failed:
        out["failed"] = failed
    return out
