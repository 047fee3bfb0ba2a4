"""The tests' oracle of the relay's stream: what exists, per kind, from events and relist markers.

The rules every consumer of CLUSTERREGISTRY_KUBE must agree with, for one reader
that sees the whole stream: a message older than what is held for that object is
ignored (redelivery and replays are harmless); a DELETED removes; and a completed
relist (its begin and end markers seen, in that order, with the SYNC events
between) removes every object of that kind that the relist did not mention and
that did not change after the relist's resourceVersion: its DELETED event was
missed (410 Gone, a relay down for long), but it is gone.

No product code reads the stream this way: the tracker's replicas share one
consumer, so none of them sees a whole relist, and `tracker.owners` applies the
same rule from marks kept in the owner records. Tests replay a stream through
this to say what the consumers should have concluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterregistry.schemas import KubeEvent, RelistMarker


def _rv(value: str) -> int:
    # resourceVersions are opaque to clients in general; kube-apiserver's (etcd revisions)
    # and kubesim's are integers, which is what ordering them here relies on
    try:
        return int(value)
    except ValueError:
        return 0


@dataclass
class _Relist:
    relist: str
    resource_version: int
    seen: set[str] = field(default_factory=set)


@dataclass
class Inventory:
    # kind -> uid -> the newest event held for that object
    objects: dict[str, dict[str, KubeEvent]] = field(default_factory=dict)
    _relists: dict[str, _Relist] = field(default_factory=dict)

    def apply_event(self, event: KubeEvent) -> bool:
        """Apply one event; False when it was older than what is held (ignored)."""
        held = self.objects.setdefault(event.kind, {})
        current = held.get(event.uid)
        rv = _rv(event.resource_version)
        if event.type == "SYNC":
            relist = self._relists.get(event.kind)
            if relist is not None and relist.relist == event.relist:
                relist.seen.add(event.uid)
        if current is not None and _rv(current.resource_version) > rv:
            return False
        if event.type == "DELETED":
            held.pop(event.uid, None)
        else:
            held[event.uid] = event
        return True

    def apply_marker(self, marker: RelistMarker) -> list[KubeEvent]:
        """Apply a relist marker; at a relist's end, return the objects found gone."""
        if marker.phase == "begin":
            self._relists[marker.kind] = _Relist(marker.relist, _rv(marker.resource_version))
            return []
        relist = self._relists.get(marker.kind)
        if relist is None or relist.relist != marker.relist:
            return []  # its begin was not seen (or a newer relist started): conclude nothing
        del self._relists[marker.kind]
        held = self.objects.get(marker.kind, {})
        gone = [
            event for uid, event in held.items()
            if uid not in relist.seen and _rv(event.resource_version) <= relist.resource_version
        ]
        for event in gone:
            del held[event.uid]
        return gone

    def uids(self, kind: str) -> set[str]:
        return set(self.objects.get(kind, {}))
