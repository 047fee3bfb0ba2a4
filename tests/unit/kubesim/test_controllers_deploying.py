"""Deployment arithmetic: fenceposts, the new ReplicaSet, pod deletion order."""

from __future__ import annotations

from typing import Any

from kubesim.controllers.deploying import fenceposts, find_new_replica_set, max_unavailable
from kubesim.controllers.objects import int_or_percent, set_condition
from kubesim.controllers.replicating import deletion_order

TEMPLATE = {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c"}]}}


def deployment(replicas: int, **rolling: Any) -> dict[str, Any]:
    strategy: dict[str, Any] = {"type": "RollingUpdate"}
    if rolling:
        strategy["rollingUpdate"] = rolling
    return {"spec": {"replicas": replicas, "strategy": strategy, "template": TEMPLATE}}


def test_int_or_percent_rounding() -> None:
    assert int_or_percent("25%", 3, round_up=True) == 1
    assert int_or_percent("25%", 3, round_up=False) == 0
    assert int_or_percent(2, 10, round_up=False) == 2
    assert int_or_percent("3", 10, round_up=False) == 3


def test_fenceposts() -> None:
    assert fenceposts(deployment(3)) == (1, 0)
    assert fenceposts(deployment(10)) == (3, 2)
    assert fenceposts(deployment(4, maxSurge=0, maxUnavailable=0)) == (0, 1)
    assert fenceposts({"spec": {"replicas": 3, "strategy": {"type": "Recreate"}}}) == (0, 0)
    assert max_unavailable(deployment(2, maxUnavailable=5)) == 2
    assert max_unavailable(deployment(0)) == 0


def test_find_new_replica_set_ignores_the_hash_label_and_prefers_the_oldest() -> None:
    hashed = {"metadata": {"labels": {"app": "a", "pod-template-hash": "x"}},
              "spec": TEMPLATE["spec"]}
    older = {"metadata": {"name": "old", "creationTimestamp": "2024-01-01T00:00:00Z"},
             "spec": {"template": hashed}}
    newer = {"metadata": {"name": "new", "creationTimestamp": "2024-01-02T00:00:00Z"},
             "spec": {"template": hashed}}
    other = {"metadata": {"name": "other", "creationTimestamp": "2023-01-01T00:00:00Z"},
             "spec": {"template": {"spec": {}}}}
    found = find_new_replica_set(deployment(1), [newer, other, older])
    assert found is not None and found["metadata"]["name"] == "old"
    assert find_new_replica_set(deployment(1), [other]) is None


def pod(name: str, *, node: str = "n", phase: str = "Running", ready: bool = True,
        ready_at: str = "2024-01-01T00:00:00Z", created: str = "2024-01-01T00:00:00Z",
        restarts: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": created},
            "spec": {"nodeName": node},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "lastTransitionTime": ready_at}],
                       "containerStatuses": [{"restartCount": restarts}]}}


def test_deletion_order_most_expendable_first() -> None:
    pods = [
        pod("ready-old", ready_at="2024-01-01T00:00:00Z"),
        pod("ready-recent", ready_at="2024-01-03T00:00:00Z"),
        pod("not-ready", ready=False),
        pod("pending", phase="Pending", ready=False),
        pod("unbound", node="", phase="Pending", ready=False),
        pod("restarty", ready_at="2024-01-01T00:00:00Z", restarts=5),
    ]
    assert [p["metadata"]["name"] for p in deletion_order(pods)] == [
        "unbound", "pending", "not-ready", "ready-recent", "restarty", "ready-old"]


def test_set_condition_keeps_transition_time_unless_status_flips() -> None:
    conditions = set_condition([], kind="Ready", status="True", at="t1", update_time=True,
                               reason="R", message="m")
    same = set_condition(conditions, kind="Ready", status="True", at="t2", update_time=True,
                         reason="R", message="m")
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["lastUpdateTime"] == "t1"
    moved = set_condition(conditions, kind="Ready", status="True", at="t2", update_time=True,
                          reason="R2", message="m")
    assert moved[0]["lastTransitionTime"] == "t1" and moved[0]["lastUpdateTime"] == "t2"
    flipped = set_condition(conditions, kind="Ready", status="False", at="t3")
    assert flipped[0]["lastTransitionTime"] == "t3"
