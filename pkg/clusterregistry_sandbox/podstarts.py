"""How pods started: time to Running, and the image pull failures the kubelet reported.

A first deploy with the default policy rewrites images to the edge registry
before the mirror has copied them; on a real node the first pull then fails
and the kubelet backs off 10 s, 20 s ... The demo must say so rather than
hide it, so each step that starts pods reports, from the API alone:

- time to Running: per pod, from metadata.creationTimestamp to its first
  container's start (state.running or state.terminated startedAt; one-second
  resolution, as the API keeps them), the slowest pod counted;
- pull failures: the kubelet's events on those pods, by reason: `Failed`
  events whose message starts "Failed to pull image" (one per failed
  attempt, ErrImagePull) and `BackOff` events "Back-off pulling image"
  (syncs that found the image in back-off), each with its aggregated count.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from clusterregistry_sandbox.apiclients import ApiClient

__all__ = ["PodStarts", "pod_starts"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class PodStarts:
    pods: int
    slowest_seconds: float | None  # None while a pod has not started
    failed_pulls: int
    backoffs: int
    first_failure: str = ""

    def line(self) -> str:
        slowest = ("not all started" if self.slowest_seconds is None
                   else f"{self.slowest_seconds:.0f}s")
        text = (f"pull failures: {self.failed_pulls} Failed, {self.backoffs} BackOff; "
                f"time to Running {slowest} (slowest of {self.pods} pods)")
        if self.first_failure:
            first = self.first_failure
            if len(first) > 200:  # the image, then the error's own end (its cause)
                first = f"{first[:70]} ... {first[-120:]}"
            text += f" (first: {first})"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"pods": self.pods, "slowest_seconds": self.slowest_seconds,
                "failed_pulls": self.failed_pulls, "backoffs": self.backoffs,
                "first_failure": self.first_failure}


def _time(text: Any) -> dt.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _started(pod: Obj) -> dt.datetime | None:
    starts = []
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        ran = state.get("running") or state.get("terminated") or {}
        started = _time(ran.get("startedAt"))
        if started is None:
            return None
        starts.append(started)
    return min(starts) if starts else None


def _count(event: Obj) -> int:
    series = event.get("series") or {}
    return int(series.get("count") or event.get("count") or 1)


def summarize(pods: Iterable[Obj], events: Iterable[Obj]) -> PodStarts:
    """The report for `pods`, from the events the API holds about them."""
    pods = list(pods)
    uids = {p["metadata"]["uid"] for p in pods}
    slowest: float | None = 0.0
    for pod in pods:
        created = _time(pod["metadata"].get("creationTimestamp"))
        started = _started(pod)
        if created is None or started is None:
            slowest = None
            break
        slowest = max(slowest or 0.0, (started - created).total_seconds())
    failed = backoffs = 0
    first: tuple[str, str] = ("", "")
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Pod" or involved.get("uid") not in uids:
            continue
        message = str(event.get("message") or "")
        if event.get("reason") == "Failed" and message.startswith("Failed to pull image"):
            failed += _count(event)
            when = str(event.get("firstTimestamp") or event.get("eventTime") or "")
            if not first[1] or when < first[0]:
                first = (when, message)
        elif event.get("reason") == "BackOff" and message.startswith("Back-off pulling image"):
            backoffs += _count(event)
    return PodStarts(pods=len(pods), slowest_seconds=slowest, failed_pulls=failed,
                     backoffs=backoffs, first_failure=first[1])


async def pod_starts(api: ApiClient, pods: list[Obj], *, namespace: str) -> PodStarts:
    events = await api.list("Event", namespace=namespace, fields="involvedObject.kind=Pod")
    return summarize(pods, events)
