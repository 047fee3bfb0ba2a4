"""The scheduler's filters, tolerations and messages."""

from __future__ import annotations

from collections import Counter
from typing import Any

from kubesim.controllers.daemoning import DAEMON_TOLERATIONS, daemon_pod_spec, target_node
from kubesim.controllers.scheduling import misfit, tolerates, unschedulable_message


def node(name: str = "n1", *, ready: bool = True, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                       "allocatable": {"pods": "2"}}}


def pod(**spec: Any) -> dict[str, Any]:
    return {"spec": {"containers": [{"name": "c", "image": "x"}], **spec}}


def test_tolerations() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    assert tolerates([{"key": "k", "operator": "Equal", "value": "v"}], taint)
    assert tolerates([{"key": "k", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)
    assert not tolerates([{"key": "k", "value": "w"}], taint)
    assert not tolerates([{"key": "k", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_filters() -> None:
    assert misfit(pod(), node(), load=0) is None
    assert misfit(pod(), node(), load=2) == "Too many pods"
    assert misfit(pod(), node(unschedulable=True), load=0) == "node(s) were unschedulable"
    tolerant = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}])
    assert misfit(tolerant, node(unschedulable=True), load=0) is None
    assert misfit(pod(), node(ready=False), load=0) == (
        "node(s) had untolerated taint {node.kubernetes.io/not-ready: }")
    tainted = node(taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])
    assert misfit(pod(), tainted, load=0) == "node(s) had untolerated taint {gpu: yes}"
    assert misfit(pod(), node(taints=[{"key": "x", "effect": "PreferNoSchedule"}]), load=0) is None
    assert misfit(pod(nodeSelector={"disk": "ssd"}), node(), load=0) == (
        "node(s) didn't match Pod's node affinity/selector")


def test_unschedulable_message() -> None:
    reasons = Counter({"node(s) were unschedulable": 1,
                       "node(s) didn't match Pod's node affinity/selector": 2})
    assert unschedulable_message(3, reasons) == (
        "0/3 nodes are available: 2 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) were unschedulable. preemption: 0/3 nodes are available: "
        "3 Preemption is not helpful for scheduling.")
    assert unschedulable_message(0, Counter()) == "no nodes available to schedule pods"


def test_daemon_pods_are_pinned_by_affinity_and_tolerate_cordons() -> None:
    required = {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a"]}]}]}
    template_spec = {"containers": [{"name": "c", "image": "x"}],
                     "affinity": {"nodeAffinity": {
                         "requiredDuringSchedulingIgnoredDuringExecution": required}},
                     "tolerations": [{"key": "node.kubernetes.io/unschedulable",
                                      "operator": "Exists", "effect": "NoSchedule"}]}
    spec = daemon_pod_spec(template_spec, "n1")
    assert target_node({"spec": spec}) == "n1"
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                       "values": ["n1"]}]}]
    assert len(spec["tolerations"]) == len(DAEMON_TOLERATIONS)  # no duplicate
    assert misfit({"spec": spec}, node("n1", unschedulable=True), load=0) is None
    assert misfit({"spec": spec}, node("n2"), load=0) is not None
    assert target_node({"spec": {"nodeName": "n7"}}) == "n7"
