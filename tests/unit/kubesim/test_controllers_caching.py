"""The shared cache's indexes, and that they stay cheap at 100,000 pods."""

from __future__ import annotations

import time
from typing import Any

from kubesim.controllers.caching import PODS, REPLICASETS, Cache


def pod(name: str, *, owner: str | None = None, node: str = "", phase: str = "Pending",
        namespace: str = "ns") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner:
        metadata["ownerReferences"] = [{"uid": owner, "controller": True, "kind": "ReplicaSet",
                                        "name": "rs"}]
    return {"metadata": metadata, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase}}


def test_owner_orphan_and_node_indexes_follow_changes() -> None:
    cache = Cache()
    cache.apply(PODS, "ADDED", obj=pod("a", owner="u1"))
    cache.apply(PODS, "ADDED", obj=pod("b"))
    assert [p["metadata"]["name"] for p in cache[PODS].owned_by("u1")] == ["a"]
    assert [p["metadata"]["name"] for p in cache[PODS].orphans_in("ns")] == ["b"]
    assert cache.unbound_pods == {"ns/a", "ns/b"}
    # adoption and binding
    old = cache.apply(PODS, "MODIFIED", obj=pod("b", owner="u1", node="n1", phase="Running"))
    assert old is not None and old["metadata"]["name"] == "b"
    assert {p["metadata"]["name"] for p in cache[PODS].owned_by("u1")} == {"a", "b"}
    assert cache[PODS].orphans_in("ns") == []
    assert cache.unbound_pods == {"ns/a"}
    assert cache.node_load["n1"] == 1 and [p["metadata"]["name"] for p in cache.pods_on("n1")] \
        == ["b"]
    # finishing frees the node's load but keeps the pod on the node
    cache.apply(PODS, "MODIFIED", obj=pod("b", owner="u1", node="n1", phase="Succeeded"))
    assert "n1" not in cache.node_load and len(cache.pods_on("n1")) == 1
    cache.apply(PODS, "DELETED", obj=pod("b", owner="u1", node="n1", phase="Succeeded"))
    assert cache.pods_on("n1") == [] and cache.get(PODS, "ns/b") is None
    assert [p["metadata"]["name"] for p in cache[PODS].owned_by("u1")] == ["a"]


def test_cluster_scoped_keys() -> None:
    cache = Cache()
    cache.apply(REPLICASETS, "ADDED", obj={"metadata": {"name": "x", "namespace": "ns"}})
    assert cache.get(REPLICASETS, "ns/x") is not None


def test_hundred_thousand_pods_index_in_linear_time() -> None:
    cache = Cache()
    owners = [f"uid-{i}" for i in range(100)]
    started = time.perf_counter()
    for i in range(100_000):
        cache.apply(PODS, "ADDED", obj=pod(f"p{i}", owner=owners[i % 100], node=f"n{i % 50}",
                                       phase="Running"))
    for i in range(0, 100_000, 2):
        cache.apply(PODS, "DELETED", obj=pod(f"p{i}", owner=owners[i % 100], node=f"n{i % 50}",
                                         phase="Running"))
    elapsed = time.perf_counter() - started
    assert len(cache[PODS].owned_by("uid-1")) == 1000
    assert len(cache[PODS].owned_by("uid-0")) == 0
    assert sum(cache.node_load.values()) == 50_000
    # a per-event cost proportional to the cluster would take minutes here
    assert elapsed < 10, elapsed
