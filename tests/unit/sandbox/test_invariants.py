"""The soak's invariant rules, without a system: each decides from what was read."""

from __future__ import annotations

import json

from clusterregistry_sandbox.invariants import (
    OwnerSnapshot,
    digest_of,
    duplicate_msg_ids,
    lost_by_live_owner,
    manifest_links,
    overfetched,
    registry_accounting,
    store_fetches,
)

IMG = "127.0.0.1:5000/soak/app-0:v1"
OTHER = "127.0.0.1:5000/soak/app-1:v1"


def _snap(taken: float, **owners: tuple[str, int, set[str]]) -> OwnerSnapshot:
    return OwnerSnapshot(taken, {uid: (k, g, frozenset(i)) for uid, (k, g, i) in owners.items()})


def test_a_deletion_under_a_recorded_owner_live_throughout_is_a_loss() -> None:
    before = _snap(10, rs=("ReplicaSet", 1, {IMG}))
    after = _snap(20, rs=("ReplicaSet", 2, {IMG}))  # scaled: a ReplicaSet's template is fixed
    assert lost_by_live_owner(IMG, 15, before, after, {"rs": frozenset({IMG})}) == [
        "ReplicaSet rs"]


def test_a_deletion_is_not_a_loss_when_the_owner_went_changed_or_was_never_recorded() -> None:
    before = _snap(10, rs=("ReplicaSet", 1, {IMG}), ds=("DaemonSet", 3, {IMG}))
    recorded = {"rs": frozenset({IMG}), "ds": frozenset({IMG})}
    # the owner is gone afterwards
    assert lost_by_live_owner(IMG, 15, before, _snap(20), recorded) == []
    # the DaemonSet's template changed (generation) and came back to the image
    assert lost_by_live_owner(IMG, 15, before, _snap(20, ds=("DaemonSet", 4, {IMG})),
                              {"ds": frozenset({IMG})}) == []
    # the tracker had not recorded it yet: the grace period is the only guard, by design
    assert lost_by_live_owner(IMG, 15, before, _snap(20, rs=("ReplicaSet", 1, {IMG})),
                              {"rs": frozenset({OTHER})}) == []
    # snapshots that do not bracket the deletion decide nothing
    assert lost_by_live_owner(IMG, 25, before, _snap(20, rs=("ReplicaSet", 1, {IMG})),
                              recorded) == []


def test_manifest_links_and_digests() -> None:
    index = json.dumps({"manifests": [{"digest": "sha256:" + "a" * 64}]}).encode()
    assert manifest_links(index) == (["sha256:" + "a" * 64], [])
    manifest = json.dumps({"config": {"digest": "sha256:" + "c" * 64, "size": 3},
                           "layers": [{"digest": "sha256:" + "d" * 64, "size": 9}]}).encode()
    assert manifest_links(manifest) == ([], [("sha256:" + "c" * 64, 3),
                                             ("sha256:" + "d" * 64, 9)])
    assert digest_of(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_registry_accounting_counts_a_shared_blob_once() -> None:
    stored = {"sha256:base": 100, "sha256:top": 10, "sha256:orphan": 7}
    expected = {"sha256:base": 100, "sha256:top": 10, "sha256:gone": 5}
    result = registry_accounting(stored, expected)
    assert result.missing == {"sha256:gone": 5}
    assert result.excess == {"sha256:orphan": 7}
    assert result.expected_bytes == 115 and result.stored_bytes == 117


def test_duplicate_msg_ids() -> None:
    assert duplicate_msg_ids(["a", "b", "a", "c", "a"]) == {"a": 3}


def test_store_fetches_count_full_transfers_and_the_allowance() -> None:
    digest = "sha256:" + "1" * 64
    line = ('127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "GET /v2/soak/app-0/blobs/{d} '
            'HTTP/1.1" {status} {size} "" "mirror"\n')
    log = (line.format(d=digest, status=200, size=100)       # whole
           + line.format(d=digest, status=200, size=40)      # cut short: not served
           + line.format(d=digest, status=404, size=0)       # not served
           + line.format(d=digest, status=206, size=60)      # a resumed range: counted
           + line.format(d=digest, status=200, size=100))
    fetches = store_fetches(log, {digest: 100})
    assert fetches[digest] == 3
    assert overfetched(fetches, {digest: 1}, {}) == {digest: (3, 1)}
    # held by three versions: three fetches are allowed
    assert overfetched(fetches, {digest: 3}, {}) == {}
    # freed by GC once and needed again: twice the versions
    assert overfetched(fetches, {digest: 2}, {digest: 1}) == {}
