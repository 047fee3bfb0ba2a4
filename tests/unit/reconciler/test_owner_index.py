"""The reconciler's source -> owners index: the refs watch and the resync's snapshot agree,
and an older snapshot never undoes what the watch delivered after it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from kubernetes_asyncio import client
from prometheus_client import CollectorRegistry

from clusterregistry import references
from clusterregistry.bus.keyvalues import Versioned
from clusterregistry.config import ReconcilerSettings
from clusterregistry.reconciler.metrics import ReconcilerMetrics
from clusterregistry.reconciler.reconciling import Reconciler
from clusterregistry.schemas import OwnerRecord

A, B = "acr.io/nf/a:1", "acr.io/nf/b:1"


def record(uid: str, *images: str) -> OwnerRecord:
    return OwnerRecord(uid=uid, kind="ReplicaSet", namespace="nf", name=uid, images=list(images))


@pytest.fixture
async def reconciler() -> AsyncIterator[Reconciler]:
    api = client.ApiClient()
    try:
        # no I/O here: only the in-memory index is exercised
        yield Reconciler(api=api, bus=SimpleNamespace(js=None),  # type: ignore[arg-type]
                         settings=ReconcilerSettings(), local_registry="edge.local:5000",
                         metrics=ReconcilerMetrics(CollectorRegistry()))
    finally:
        await api.close()


def name(source: str) -> str:
    return references.artifact_name(references.parse(source))


async def test_watch_updates_move_owners_between_sources(reconciler: Reconciler) -> None:
    reconciler._apply_ref("o1", Versioned(record("o1", A), 1))
    reconciler._apply_ref("o2", Versioned(record("o2", A, B), 2))
    assert reconciler.by_source == {A: {"o1", "o2"}, B: {"o2"}}
    assert reconciler.dirty == {name(A), name(B)}
    reconciler.dirty.clear()
    reconciler._apply_ref("o2", Versioned(None, 3, deleted=True))
    assert reconciler.by_source == {A: {"o1"}}
    assert reconciler.dirty == {name(A), name(B)}  # B now has no owner: its count drops
    assert reconciler.desired(name(B)) is not None
    assert reconciler.desired(name(B)).owners == ()  # type: ignore[union-attr]


async def test_an_older_snapshot_never_undoes_newer_watch_updates(
        reconciler: Reconciler) -> None:
    reconciler._apply_ref("o1", Versioned(record("o1", A), 5))
    reconciler._apply_ref("o2", Versioned(record("o2", B), 9))  # written after the snapshot
    snapshot = {"o1": Versioned(record("o1", A), 5),
                "gone": Versioned(None, 7, deleted=True)}
    reconciler._apply_ref("gone", Versioned(record("gone", A), 4))
    reconciler._apply_refs(snapshot)
    assert reconciler.by_source == {A: {"o1"}, B: {"o2"}}
    # a key the snapshot lacks (purged) and held from before it goes
    reconciler._apply_ref("old", Versioned(record("old", B), 3))
    reconciler._apply_refs({"o2": Versioned(record("o2", B), 9)})
    assert reconciler.by_source == {B: {"o2"}}
