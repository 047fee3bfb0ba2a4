"""The CronJob controller: creates Jobs on a cron schedule.

Follows kube's cronjob_controllerv2: at each reconcile it finds the most
recent scheduled time in (lastScheduleTime or creation, now] (croniter, in
spec.timeZone or the controller's UTC), skips it if it is older than
startingDeadlineSeconds, honours concurrencyPolicy (Allow; Forbid skips a
run while one is active without advancing lastScheduleTime; Replace deletes
the active ones), creates `<cronjob>-<scheduled unix minutes>` with the
cronjob-scheduled-timestamp annotation, and requeues itself for the next
schedule time (a real timer, no polling). Finished jobs beyond the
successful/failed history limits are deleted.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterable
from typing import Any

from croniter import croniter

from kubesim.controllers.caching import CRONJOBS, JOBS
from kubesim.controllers.jobbing import job_finished
from kubesim.controllers.objects import (
    Obj,
    condition_true,
    controller_ref,
    deep_copy,
    key_of,
    meta,
    name_of,
    namespace_of,
    now,
    owner_reference,
    parse_time,
    rfc3339,
    uid_of,
)
from kubesim.controllers.queueing import Controller
from kubesim.controllers.workloads import delete_ignoring_missing, write_status
from kubesim.statuses import ApiError

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"


class ScheduleError(ValueError):
    """The CronJob's schedule or time zone cannot be parsed."""


def _zone(cronjob: Obj) -> tuple[str, dt.tzinfo]:
    spec = cronjob.get("spec") or {}
    schedule = str(spec.get("schedule") or "").strip()
    zone_name = spec.get("timeZone")
    for prefix in ("TZ=", "CRON_TZ="):
        if schedule.startswith(prefix):
            zone_name, _, schedule = schedule[len(prefix) :].partition(" ")
            schedule = schedule.strip()
    if not zone_name:
        return schedule, dt.UTC
    try:
        return schedule, zoneinfo.ZoneInfo(str(zone_name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ScheduleError(f"unknown time zone {zone_name}") from err


def most_recent_schedule(
    cronjob: Obj, *, earliest: dt.datetime, at: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime]:
    """(the latest schedule time in (earliest, at] or None, the next schedule time after at)."""
    schedule, zone = _zone(cronjob)
    if not croniter.is_valid(schedule):
        raise ScheduleError(f"unparseable schedule {schedule!r}")
    local_now = at.astimezone(zone)
    previous = croniter(schedule, local_now).get_prev(dt.datetime)
    following = croniter(schedule, local_now).get_next(dt.datetime)
    # croniter's get_prev from an exact schedule time returns the one before: include `at`.
    if croniter.match(schedule, local_now) and local_now.second == 0:
        previous = local_now.replace(microsecond=0)
    previous_utc = previous.astimezone(dt.UTC)
    if previous_utc <= earliest:
        return None, following.astimezone(dt.UTC)
    return previous_utc, following.astimezone(dt.UTC)


def _job_time(job: Obj) -> str:
    return (job.get("status") or {}).get("startTime") or meta(job).get("creationTimestamp") or ""


class CronJobController(Controller):
    name = "cronjob"
    workers = 1

    def initial_keys(self) -> Iterable[str]:
        return list(self.cache[CRONJOBS].objects)

    def on_event(self, event: str, kind: str, *, old: Obj | None, new: Obj | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if kind == CRONJOBS:
            self.queue.add(key_of(obj))
        elif kind == JOBS:
            ref = controller_ref(obj)
            if ref is not None and ref.get("kind") == "CronJob":
                self.queue.add(f"{namespace_of(obj)}/{ref.get('name')}")

    async def reconcile(self, key: str) -> None:
        cronjob = self.cache.get(CRONJOBS, key)
        if cronjob is None or meta(cronjob).get("deletionTimestamp"):
            return
        spec = cronjob.get("spec") or {}
        jobs = self.cache[JOBS].owned_by(uid_of(cronjob))
        active = [j for j in jobs if not job_finished(j)]
        finished = [j for j in jobs if job_finished(j)]
        await self._cleanup(cronjob, finished)
        status: dict[str, Any] = {
            "active": [self._reference(j) for j in sorted(active, key=_job_time)] or None,
        }
        successful = [
            str((j.get("status") or {}).get("completionTime"))
            for j in finished
            if condition_true(j, "Complete") and (j.get("status") or {}).get("completionTime")
        ]
        if successful:
            status["lastSuccessfulTime"] = max(successful)
        at = now()
        previous = cronjob.get("status") or {}
        earliest = (
            parse_time(previous.get("lastScheduleTime"))
            or parse_time(meta(cronjob).get("creationTimestamp"))
            or at
        )
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, at - dt.timedelta(seconds=int(deadline)))
        try:
            scheduled, following = most_recent_schedule(cronjob, earliest=earliest, at=at)
        except ScheduleError:
            await write_status(self.api, self.ctx.resource(CRONJOBS), obj=cronjob, status=status)
            return
        # The next run is a real timer.
        self.queue.add_after(key, max((following - at).total_seconds(), 0.0) + 0.01)
        if scheduled is None or spec.get("suspend"):
            await write_status(self.api, self.ctx.resource(CRONJOBS), obj=cronjob, status=status)
            return
        policy = spec.get("concurrencyPolicy", "Allow")
        if policy == "Forbid" and active:
            # Skipped without moving lastScheduleTime: it runs once the active job ends,
            # if still within startingDeadlineSeconds (kube's behaviour).
            await write_status(self.api, self.ctx.resource(CRONJOBS), obj=cronjob, status=status)
            return
        if policy == "Replace":
            for job in active:
                await delete_ignoring_missing(
                    self.api, self.ctx.resource(JOBS), obj=job, propagation_policy="Background"
                )
            active = []
        created = await self._create_job(cronjob, scheduled)
        if created is not None and uid_of(created) not in {uid_of(j) for j in active}:
            refs = [self._reference(j) for j in sorted(active, key=_job_time)]
            refs.append(self._reference(created))
            status["active"] = refs
        status["lastScheduleTime"] = rfc3339(scheduled)
        latest = self.cache.get(CRONJOBS, key) or cronjob
        await write_status(self.api, self.ctx.resource(CRONJOBS), obj=latest, status=status)

    @staticmethod
    def _reference(job: Obj) -> dict[str, Any]:
        return {
            "kind": "Job",
            "namespace": namespace_of(job),
            "name": name_of(job),
            "uid": uid_of(job),
            "apiVersion": "batch/v1",
            "resourceVersion": meta(job).get("resourceVersion"),
        }

    async def _create_job(self, cronjob: Obj, scheduled: dt.datetime) -> Obj | None:
        spec = cronjob.get("spec") or {}
        template = deep_copy(spec.get("jobTemplate") or {})
        template_meta = template.get("metadata") or {}
        name = f"{name_of(cronjob)}-{int(scheduled.timestamp() // 60)}"
        annotations = dict(template_meta.get("annotations") or {})
        annotations[SCHEDULED_TIMESTAMP] = rfc3339(scheduled)
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace_of(cronjob),
            "annotations": annotations,
            "ownerReferences": [owner_reference(cronjob, api_version="batch/v1", kind="CronJob")],
        }
        if template_meta.get("labels"):
            metadata["labels"] = dict(template_meta["labels"])
        job: dict[str, Any] = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": metadata,
            "spec": template.get("spec") or {},
        }
        try:
            return await self.api.create(
                self.ctx.resource(JOBS), job, namespace=namespace_of(cronjob)
            )
        except ApiError as err:
            if err.reason == "AlreadyExists":
                return self.cache.get(JOBS, f"{namespace_of(cronjob)}/{name}")
            raise

    async def _cleanup(self, cronjob: Obj, finished: list[Obj]) -> None:
        spec = cronjob.get("spec") or {}
        for want_complete, limit in (
            (True, int(spec.get("successfulJobsHistoryLimit", 3))),
            (False, int(spec.get("failedJobsHistoryLimit", 1))),
        ):
            group = [j for j in finished if condition_true(j, "Complete") == want_complete]
            group.sort(key=_job_time)
            excess = len(group) - limit
            for job in group[: max(excess, 0)]:
                if meta(job).get("deletionTimestamp"):
                    continue
                await delete_ignoring_missing(
                    self.api, self.ctx.resource(JOBS), obj=job, propagation_policy="Background"
                )
