"""The oracle of the relay's stream (`tests.world.inventories`): stale messages, deletes,
relist markers."""

from __future__ import annotations

from clusterregistry.schemas import KubeEvent, RelistMarker
from tests.world.inventories import Inventory


def ev(uid: str, rv: int, etype: str = "ADDED", relist: str = "") -> KubeEvent:
    return KubeEvent(type=etype, kind="pod", namespace="nf", name=uid,  # type: ignore[arg-type]
                     uid=uid, resource_version=str(rv), relist=relist)


def mark(phase: str, relist: str, rv: int, count: int = 0) -> RelistMarker:
    return RelistMarker(kind="pod", phase=phase, relist=relist,  # type: ignore[arg-type]
                        resource_version=str(rv), count=count)


def test_stale_messages_are_ignored_and_deletes_remove() -> None:
    inv = Inventory()
    assert inv.apply_event(ev("a", 5))
    assert not inv.apply_event(ev("a", 3, "MODIFIED"))  # a redelivered older message
    assert inv.objects["pod"]["a"].resource_version == "5"
    assert inv.apply_event(ev("a", 7, "DELETED"))
    assert inv.uids("pod") == set()


def test_a_completed_relist_removes_what_it_did_not_mention() -> None:
    inv = Inventory()
    for uid, rv in (("a", 1), ("b", 2), ("c", 3)):
        inv.apply_event(ev(uid, rv))
    inv.apply_marker(mark("begin", "r1", 10))
    inv.apply_event(ev("a", 1, "SYNC", "r1"))
    inv.apply_event(ev("d", 9, "SYNC", "r1"))
    # c changed after the relist's snapshot: its state is newer than the relist, keep it
    inv.apply_event(ev("c", 11, "MODIFIED"))
    gone = inv.apply_marker(mark("end", "r1", 10, count=2))
    assert [e.uid for e in gone] == ["b"]
    assert inv.uids("pod") == {"a", "c", "d"}


def test_an_end_without_its_begin_concludes_nothing() -> None:
    inv = Inventory()
    inv.apply_event(ev("a", 1))
    inv.apply_marker(mark("begin", "r1", 10))
    inv.apply_marker(mark("begin", "r2", 12))  # the relay restarted its relist
    assert inv.apply_marker(mark("end", "r1", 10)) == []
    assert inv.uids("pod") == {"a"}
    inv.apply_event(ev("a", 1, "SYNC", "r2"))
    assert inv.apply_marker(mark("end", "r2", 12)) == []
    assert inv.uids("pod") == {"a"}
