"""The tracker's rules, without I/O: which owner an event concerns, what it adds, what
removes a record, stale and redelivered messages, and relists."""

from __future__ import annotations

import itertools

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from clusterregistry.schemas import (
    Container,
    KubeEvent,
    OwnerRecord,
    OwnerRef,
    PodState,
    RelistMarker,
    TemplateState,
)
from clusterregistry.tracker import owners
from clusterregistry.tracker.owners import NOTHING, TOMBSTONE, Delete, Skip, Stored, Write

EARLY = owners.Settings(early_loading=True, local_registry="edge.local:5000")
LATE = owners.Settings(early_loading=False, local_registry="edge.local:5000")
RS = OwnerRef(kind="ReplicaSet", name="upf-7d9c", uid="rs-1", api_version="apps/v1")


def pod(uid: str = "pod-1", *, rv: str = "10", type_: str = "ADDED",
        owner: OwnerRef | None = RS, images: tuple[str, ...] = ("acr.io/nf/upf:1.2",),
        originals: tuple[str, ...] = (), deleting: str = "", secrets: tuple[str, ...] = (),
        oversized: bool = False) -> KubeEvent:
    containers = [
        Container(name=f"c{i}", image=image,
                  original_image=originals[i] if i < len(originals) else "")
        for i, image in enumerate(images)]
    return KubeEvent(type=type_, kind="pod", namespace="nf", name=f"name-{uid}", uid=uid,  # type: ignore[arg-type]
                     resource_version=rv, owner=owner, oversized=oversized,
                     pod=None if oversized else PodState(
                         containers=containers, deletion_timestamp=deleting,
                         image_pull_secrets=list(secrets)))


def replicaset(*, uid: str = "rs-1", rv: str = "5", type_: str = "ADDED",
               images: tuple[str, ...] = ("acr.io/nf/upf:1.2",), kind: str = "replicaset",
               init: tuple[str, ...] = ()) -> KubeEvent:
    return KubeEvent(type=type_, kind=kind, namespace="nf", name="upf-7d9c", uid=uid,  # type: ignore[arg-type]
                     resource_version=rv, template=TemplateState(
                         containers=[Container(name=f"c{i}", image=im)
                                     for i, im in enumerate(images)],
                         init_containers=[Container(name=f"i{i}", image=im)
                                          for i, im in enumerate(init)]))


def record(outcome: owners.Outcome) -> OwnerRecord:
    assert isinstance(outcome, Write), outcome
    return outcome.record


def test_a_pod_counts_for_its_controller_with_canonical_originals() -> None:
    event = pod(images=("edge.local:5000/acr.io/nf/upf:1.2", "busybox"),
                originals=("acr.io/nf/upf:1.2",), secrets=("acr-pull",))
    got = record(owners.handle(event, NOTHING, LATE, now=1.0))
    assert (got.uid, got.kind, got.namespace, got.name) == ("rs-1", "ReplicaSet", "nf",
                                                            "upf-7d9c")
    assert got.images == ["acr.io/nf/upf:1.2", "docker.io/library/busybox:latest"]
    assert got.pull_secrets == ["acr-pull"]
    # the owner's own resourceVersion is unknown yet; the pod's is what was observed
    assert (got.resource_version, got.observed_resource_version) == ("", "10")


def test_a_local_image_without_annotation_maps_back_to_its_source() -> None:
    got = record(owners.handle(pod(images=("edge.local:5000/acr.io/nf/upf:1.2",)), NOTHING,
                               LATE, now=1.0))
    assert got.images == ["acr.io/nf/upf:1.2"]


def test_invalid_references_are_skipped_not_fatal() -> None:
    got = record(owners.handle(pod(images=("UPPER/Bad::ref", "acr.io/ok:1")), NOTHING, LATE,
                               now=1.0))
    assert got.images == ["acr.io/ok:1"]


def test_bare_pods_and_pods_of_unknown_controllers_own_their_images() -> None:
    bare = record(owners.handle(pod(owner=None), NOTHING, LATE, now=1.0))
    assert (bare.uid, bare.kind, bare.name) == ("pod-1", "Pod", "name-pod-1")
    custom = OwnerRef(kind="Workflow", name="wf", uid="wf-1")
    assert record(owners.handle(pod(owner=custom), NOTHING, LATE, now=1.0)).kind == "Pod"
    assert isinstance(owners.handle(pod(owner=None, type_="DELETED", rv="11"),
                                    Stored(record=bare), LATE, now=2.0), Delete)


def test_pods_dying_remove_nothing_the_owner_deleted_does() -> None:
    stored = Stored(record=record(owners.handle(pod(), NOTHING, LATE, now=1.0)))
    for event in (pod(type_="DELETED", rv="20"), pod(rv="21", deleting="2025-01-01T00:00:00Z"),
                  pod(uid="pod-2", rv="22"), pod(uid="pod-3", rv="23", deleting="x",
                                                   images=("acr.io/late:1",))):
        outcome = owners.handle(event, stored, LATE, now=2.0)
        assert not isinstance(outcome, Delete)
        assert isinstance(outcome, Skip)
    assert owners.handle(replicaset(type_="DELETED", rv="30"), stored, LATE,
                         now=3.0) == Delete("rs-1")


def test_a_tombstone_keeps_late_pod_events_of_a_deleted_owner_out() -> None:
    assert owners.handle(pod(rv="99"), TOMBSTONE, LATE, now=1.0) == Skip("owner-deleted")
    assert owners.handle(replicaset(rv="99"), TOMBSTONE, EARLY, now=1.0) == Skip(
        "owner-deleted")
    # a terminating pod adds nothing: it may be the last word of a deleted owner, and what it
    # runs was added while it lived
    assert owners.handle(pod(deleting="2025-01-01T00:00:00Z"), NOTHING, LATE,
                         now=1.0) == Skip("terminating")


def test_early_loading_counts_templates_before_any_pod() -> None:
    event = replicaset(images=("acr.io/nf/upf:1.2",), init=("acr.io/nf/init:1",))
    got = record(owners.handle(event, NOTHING, EARLY, now=1.0))
    assert got.images == ["acr.io/nf/init:1", "acr.io/nf/upf:1.2"]
    assert got.resource_version == "5"
    assert owners.handle(event, NOTHING, LATE, now=1.0) == Skip("no-pod-yet")
    # without early loading, the template counts once a pod appeared
    stored = Stored(record=record(owners.handle(pod(rv="6"), NOTHING, LATE, now=1.0)))
    after = record(owners.handle(replicaset(rv="7", init=("acr.io/nf/init:1",)), stored, LATE,
                                 now=2.0))
    assert after.images == ["acr.io/nf/init:1", "acr.io/nf/upf:1.2"]


def test_each_owner_kind_has_its_record_kind() -> None:
    for kind, expected in (("job", "Job"), ("daemonset", "DaemonSet"),
                           ("statefulset", "StatefulSet")):
        got = record(owners.handle(replicaset(kind=kind, uid=f"{kind}-1"), NOTHING, EARLY,
                                   now=1.0))
        assert (got.kind, got.uid) == (expected, f"{kind}-1")
    assert owners.handle(KubeEvent(type="ADDED", kind="artifact", namespace="", name="a",
                                   uid="a-1", resource_version="1"), NOTHING, EARLY,
                         now=1.0) == Skip("not-tracked")


def test_stale_redelivered_and_oversized_messages_change_nothing() -> None:
    stored = Stored(record=record(owners.handle(replicaset(rv="50"), NOTHING, EARLY, now=1.0)))
    assert owners.handle(replicaset(rv="40", images=("acr.io/other:1",)), stored, EARLY,
                         now=2.0) == Skip("stale")
    assert owners.handle(replicaset(rv="50"), stored, EARLY, now=2.0) == Skip("unchanged")
    assert owners.handle(pod(oversized=True, rv="60"), stored, EARLY, now=2.0) == Skip(
        "oversized")
    # a template change adds; nothing an owner used is dropped while it lives
    grown = record(owners.handle(replicaset(rv="55", images=("acr.io/nf/upf:1.3",)), stored,
                                 EARLY, now=2.0))
    assert grown.images == ["acr.io/nf/upf:1.2", "acr.io/nf/upf:1.3"]


events_strategy = st.lists(
    st.sampled_from([
        pod("p1", rv="10"), pod("p2", rv="11", images=("acr.io/b:1",)),
        pod("p1", rv="12", type_="DELETED"), replicaset(rv="5"),
        replicaset(rv="13", images=("acr.io/c:1",)),
        pod("p3", rv="14", images=("acr.io/d:1",), deleting="x"),
    ]), min_size=1, max_size=8)


@given(events_strategy)
def test_redelivery_and_replay_give_the_same_record(events: list[KubeEvent]) -> None:
    def fold(sequence: list[KubeEvent]) -> list[str] | None:
        stored = NOTHING
        for event in sequence:
            outcome = owners.handle(event, stored, EARLY, now=1.0)
            if isinstance(outcome, Write):
                stored = Stored(record=outcome.record)
        return stored.record.images if stored.record else None

    once = fold(events)
    assert fold([e for e in events for _ in range(2)]) == once  # each message redelivered
    assert fold(events + events) == once  # the whole stream replayed after a restart


def test_pods_of_one_owner_in_any_order_give_the_same_record() -> None:
    pods = [pod(f"p{i}", rv=str(10 + i), images=(f"acr.io/img{i % 3}:1",)) for i in range(5)]
    results = set()
    for order in itertools.permutations(pods):
        stored = NOTHING
        for event in order:
            outcome = owners.handle(event, stored, LATE, now=1.0)
            if isinstance(outcome, Write):
                stored = Stored(record=outcome.record)
        assert stored.record is not None
        results.add(tuple(stored.record.images))
    assert results == {("acr.io/img0:1", "acr.io/img1:1", "acr.io/img2:1")}


def marker(kind: str, phase: str, relist: str = "r1", rv: str = "100",
           count: int = 0) -> RelistMarker:
    return RelistMarker(kind=kind, phase=phase, relist=relist,  # type: ignore[arg-type]
                        resource_version=rv, count=count)


def owner_record(uid: str, kind: str, *, rv: str = "", observed: str = "50") -> OwnerRecord:
    return OwnerRecord(uid=uid, kind=kind, namespace="nf", name=uid,  # type: ignore[arg-type]
                       images=["acr.io/a:1"], resource_version=rv,
                       observed_resource_version=observed)


def sync(uid: str, *, kind: str = "replicaset", relist: str = "r1", rv: str = "40",
         owner: OwnerRef | None = None) -> KubeEvent:
    if kind == "pod":
        return KubeEvent(type="SYNC", kind="pod", namespace="nf", name=uid, uid=uid,
                         resource_version=rv, owner=owner, relist=relist,
                         pod=PodState(containers=[Container(name="c", image="acr.io/a:1")]))
    return KubeEvent(type="SYNC", kind=kind, namespace="nf", name=uid, uid=uid,  # type: ignore[arg-type]
                     resource_version=rv, relist=relist, template=TemplateState(
                         containers=[Container(name="c", image="acr.io/a:1")]))


def end(kind: str = "replicaset", relist: str = "r1", *, rv: str = "100",
        sequence: int = 500) -> owners.RelistEnd:
    got = owners.relist_end(marker(kind, "end", relist, rv), sequence=sequence)
    assert got is not None
    return got


def test_an_owners_own_sync_marks_its_record_whatever_else_it_means() -> None:
    stored = Stored(record=owner_record("rs-1", "ReplicaSet", rv="40"))
    # unchanged images: still a write, of the mark alone
    marked = record(owners.handle(sync("rs-1"), stored, EARLY, now=2.0, sequence=7))
    assert (marked.relist, marked.relist_sequence, marked.images) == ("r1", 7, ["acr.io/a:1"])
    # stale (the record already holds a newer state): marked, the newer state kept
    newer = Stored(record=owner_record("rs-1", "ReplicaSet", rv="60"))
    stale = record(owners.handle(sync("rs-1", rv="40"), newer, EARLY, now=2.0, sequence=7))
    assert (stale.relist, stale.resource_version) == ("r1", "60")
    # once marked, the same SYNC redelivered changes nothing
    assert owners.handle(sync("rs-1"), Stored(record=marked), EARLY, now=3.0,
                         sequence=7) == Skip("unchanged")
    # no record yet (no pod, early loading off): an empty one, so the end knows it exists
    empty = record(owners.handle(sync("rs-2"), NOTHING, LATE, now=2.0, sequence=8))
    assert (empty.uid, empty.kind, empty.images, empty.relist) == ("rs-2", "ReplicaSet", [],
                                                                   "r1")
    # ... which does not make its template count before a pod appears
    assert owners.handle(replicaset(uid="rs-2", rv="41"), Stored(record=empty), LATE,
                         now=3.0) == Skip("no-pod-yet")
    # a deleted owner's SYNC (its DELETED applied first by another replica) stays deleted
    assert owners.handle(sync("rs-1"), TOMBSTONE, EARLY, now=2.0, sequence=9) == Skip(
        "owner-deleted")


def test_a_pods_sync_marks_only_a_bare_pods_record() -> None:
    rs = Stored(record=owner_record("rs-1", "ReplicaSet"))
    controlled = owners.handle(sync("pod-1", kind="pod", owner=RS), rs, LATE, now=2.0,
                               sequence=7)
    assert controlled == Skip("unchanged")  # its images counted; the owner's relist is its own
    bare = record(owners.handle(sync("pod-2", kind="pod"), NOTHING, LATE, now=2.0,
                                sequence=8))
    assert (bare.kind, bare.relist, bare.relist_sequence) == ("Pod", "r1", 8)
    # a later event of the pod keeps the mark
    later = record(owners.handle(pod("pod-2", owner=None, rv="45", images=("acr.io/b:1",)),
                                 Stored(record=bare), LATE, now=3.0, sequence=9))
    assert (later.relist, later.relist_sequence) == ("r1", 8)


def test_a_late_sync_of_an_older_relist_does_not_undo_a_newer_mark() -> None:
    newer = record(owners.handle(sync("rs-1", relist="r2"), NOTHING, EARLY, now=1.0,
                                 sequence=20))
    # r1's SYNC (earlier in the stream) applied after r2's by another replica
    assert owners.handle(sync("rs-1", relist="r1"), Stored(record=newer), EARLY, now=2.0,
                         sequence=10) == Skip("unchanged")


def test_a_completed_relist_dereferences_what_it_did_not_mark() -> None:
    def marked(uid: str, kind: str, relist: str, sequence: int, *, observed: str = "50"
               ) -> OwnerRecord:
        return msgspec.structs.replace(owner_record(uid, kind, observed=observed),
                                       relist=relist, relist_sequence=sequence)

    records = {
        "rs-seen": marked("rs-seen", "ReplicaSet", "r1", 300),
        "rs-gone": marked("rs-gone", "ReplicaSet", "r0", 100),
        "rs-never-marked": owner_record("rs-never-marked", "ReplicaSet"),
        # created after the relist's resourceVersion (a watch event applied early by
        # another replica): not proof of anything
        "rs-new": owner_record("rs-new", "ReplicaSet", observed="101"),
        # marked by a relist after this end (a newer one, or a stream recreated): keep
        "rs-later": marked("rs-later", "ReplicaSet", "r2", 600),
        "job-1": owner_record("job-1", "Job"),
        "pod-bare": owner_record("pod-bare", "Pod"),
    }
    assert owners.dereferenced(end(), records) == ["rs-gone", "rs-never-marked"]
    assert owners.dereferenced(end("pod"), records) == ["pod-bare"]


def test_an_interrupted_relist_leaves_the_next_complete_one_to_conclude() -> None:
    # begin markers conclude nothing; neither does an end of a kind the tracker ignores
    assert owners.relist_end(marker("replicaset", "begin"), sequence=5) is None
    assert owners.relist_end(marker("artifact", "end"), sequence=5) is None
    # r1 began, marked rs-a, and was interrupted (no end); r2 listed only rs-b
    stored = NOTHING
    a = record(owners.handle(sync("rs-a", relist="r1"), stored, EARLY, now=1.0, sequence=10))
    b = record(owners.handle(sync("rs-b", relist="r1"), stored, EARLY, now=1.0, sequence=11))
    b = record(owners.handle(sync("rs-b", relist="r2"), Stored(record=b), EARLY, now=2.0,
                             sequence=21))
    got = owners.dereferenced(end(relist="r2", sequence=30), {"rs-a": a, "rs-b": b})
    assert got == ["rs-a"]
