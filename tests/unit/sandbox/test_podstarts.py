"""The demo's pod start report: time to Running and the kubelet's pull failure events."""

from __future__ import annotations

from typing import Any

from clusterregistry_sandbox.podstarts import summarize


def pod(uid: str, created: str, started: str | None, *, job: bool = False) -> dict[str, Any]:
    state: dict[str, Any] = {"waiting": {"reason": "ErrImagePull"}}
    if started is not None:
        state = ({"terminated": {"startedAt": started, "exitCode": 0}} if job
                 else {"running": {"startedAt": started}})
    return {"metadata": {"uid": uid, "creationTimestamp": created},
            "status": {"containerStatuses": [{"name": "app", "state": state}]}}


def event(uid: str, reason: str, message: str, *, count: int = 1,
          first: str = "2026-12-04T10:00:01Z", kind: str = "Pod") -> dict[str, Any]:
    return {"involvedObject": {"kind": kind, "uid": uid}, "reason": reason, "message": message,
            "count": count, "firstTimestamp": first}


def test_the_slowest_pod_and_the_failures_of_these_pods_only() -> None:
    pods = [pod("a", "2026-12-04T10:00:00Z", "2026-12-04T10:00:11Z"),
            pod("b", "2026-12-04T10:00:00Z", "2026-12-04T10:00:02Z", job=True)]
    events = [
        event("a", "Pulling", 'Pulling image "edge/nf/upf:1"'),
        event("a", "Failed", 'Failed to pull image "edge/nf/upf:1": rpc error: code = '
                             "NotFound desc = later", first="2026-12-04T10:00:03Z"),
        event("a", "Failed", 'Failed to pull image "edge/nf/upf:1": rpc error: code = '
                             "NotFound desc = earlier", count=2),
        event("a", "Failed", "Error: ErrImagePull", count=3),
        event("a", "BackOff", 'Back-off pulling image "edge/nf/upf:1"', count=4),
        event("b", "BackOff", "Back-off restarting failed container app in pod b"),
        event("z", "Failed", 'Failed to pull image "other": not ours'),
        event("a", "Failed", 'Failed to pull image "x": on a ReplicaSet', kind="ReplicaSet"),
    ]
    starts = summarize(pods, events)
    assert (starts.pods, starts.slowest_seconds, starts.failed_pulls, starts.backoffs) == (
        2, 11.0, 3, 4)
    assert starts.first_failure.endswith("earlier")
    assert starts.line().startswith("pull failures: 3 Failed, 4 BackOff; time to Running 11s "
                                    "(slowest of 2 pods) (first: Failed to pull image")


def test_a_pod_not_started_yet_is_said_so() -> None:
    starts = summarize([pod("a", "2026-12-04T10:00:00Z", None)], [])
    assert starts.slowest_seconds is None
    assert starts.line() == ("pull failures: 0 Failed, 0 BackOff; time to Running not all "
                             "started (slowest of 1 pods)")
