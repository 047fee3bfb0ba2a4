"""The reconciler's decisions, without I/O: phases, references, retries with back-off,
timeouts, refreshes, stale results, and GC's Deleting left alone."""

from __future__ import annotations

import random
from typing import Any

import pytest

from clusterregistry import references
from clusterregistry.reconciler import statuses
from clusterregistry.reconciler.statuses import Desired, Plan, Rules
from clusterregistry.schemas import MirrorProgress, MirrorResult, OwnerRecord

RULES = Rules(local_registry="edge.local:5000", mirror_timeout=60, retry_initial=10,
              retry_max=80, retry_jitter=0.2, refresh_interval=0, owners_listed=2)
SOURCE = "acr.io/nf/upf:1.2"
NAME = references.artifact_name(references.parse(SOURCE))


def owner(uid: str, ns: str = "nf", secrets: tuple[str, ...] = ()) -> OwnerRecord:
    return OwnerRecord(uid=uid, kind="ReplicaSet", namespace=ns, name=f"rs-{uid}",
                       images=[SOURCE], pull_secrets=list(secrets))


def artifact(status: dict[str, Any] | None = None, rv: str = "7") -> dict[str, Any]:
    return {"metadata": {"name": NAME, "resourceVersion": rv, "generation": 1},
            "spec": {"sourceArtifact": SOURCE, "localArtifact": f"edge.local:5000/{SOURCE}"},
            "status": status or {}}


def step(status: dict[str, Any] | None, owners: tuple[OwnerRecord, ...], now: float,
         rules: Rules = RULES) -> tuple[Plan, dict[str, Any]]:
    """Plan one step and apply its patch as the API server would (merge, null deletes)."""
    plan = statuses.plan(desired=Desired(SOURCE, owners), artifact=artifact(status), now=now,
                         rules=rules, rand=random.Random(1))
    merged = dict(status or {})
    for key, value in (plan.status or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return plan, merged


def result(generation: int, *, ok: bool = True, digest: str = "sha256:" + "a" * 64,
           retryable: bool = True) -> MirrorResult:
    return MirrorResult(artifact=NAME, generation=generation, source=SOURCE,
                        destination=f"edge.local:5000/{SOURCE}", ok=ok, digest=digest,
                        size=123, platforms=["linux/amd64"], retryable=retryable,
                        error="" if ok else "manifest unknown", reason="" if ok else "404")


def apply(status: dict[str, Any], res: MirrorResult, now: float,
          rules: Rules = RULES) -> dict[str, Any] | None:
    patch = statuses.on_result(res, artifact(status), now=now, rules=rules,
                               rand=random.Random(1))
    if patch is None:
        return None
    merged = dict(status)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def test_a_referenced_source_gets_an_artifact_then_pending_then_a_request() -> None:
    created = statuses.plan(desired=Desired(SOURCE, (owner("a"),)), artifact=None, now=0,
                            rules=RULES, rand=random.Random(1))
    assert created.create == {
        "metadata": {"name": NAME, "labels": statuses.MANAGED_BY},
        "spec": {"sourceArtifact": SOURCE, "localArtifact": "edge.local:5000/acr.io/nf/upf:1.2"}}
    assert created.again
    assert statuses.plan(desired=Desired(SOURCE), artifact=None, now=0, rules=RULES,
                         rand=random.Random(1)) == Plan()
    plan, status = step(None, (owner("a", secrets=("pull",)),), now=100)
    assert plan.request is None and plan.again
    assert status["phase"] == "Pending"
    assert status["references"] == {"count": 1, "owners": [
        {"kind": "ReplicaSet", "namespace": "nf", "name": "rs-a", "uid": "a"}]}
    assert status["conditions"][0]["status"] == "False"
    # generations start from the first status's time in ms: a re-created Artifact (after GC)
    # never reuses a request id of its predecessor
    assert status["mirrorGeneration"] == 100_000
    plan, status = step(status, (owner("a", secrets=("pull",)),), now=101)
    assert plan.reason == "first" and plan.request is not None
    assert (plan.request.generation, plan.request.attempt) == (100_001, 0)
    assert plan.request.destination == "edge.local:5000/acr.io/nf/upf:1.2"
    assert [(s.namespace, s.name) for s in plan.request.pull_secrets] == [("nf", "pull")]
    assert status["phase"] == "Mirroring" and status["mirrorGeneration"] == 100_001
    assert plan.wake_at == 101 + 60  # the timeout
    # nothing changed: no write at all
    again, _ = step(status, (owner("a", secrets=("pull",)),), now=102)
    assert again.status is None and again.request is None


def test_results_make_it_available_and_stale_ones_are_ignored() -> None:
    _, status = step({"phase": "Pending"}, (owner("a"),), now=0)
    assert apply(status, result(0), now=1) is None  # another generation
    done = apply(status, result(1), now=5)
    assert done is not None
    assert (done["phase"], done["digest"], done["size"], done["attempts"]) == (
        "Available", "sha256:" + "a" * 64, 123, 0)
    assert "nextMirrorTime" not in done  # no refresh configured
    assert done["conditions"][0]["status"] == "True"
    assert done["lastMirrorTime"] == statuses.timestamp(5)


def test_failures_retry_with_exponential_backoff_and_jitter() -> None:
    _, status = step({"phase": "Pending"}, (owner("a"),), now=0)
    delays = []
    now = 0.0
    for attempt in range(1, 6):
        failed = apply(status, result(status["mirrorGeneration"], ok=False), now=now)
        assert failed is not None and failed["phase"] == "Failed"
        assert failed["attempts"] == attempt
        assert "manifest unknown (404)" in failed["message"]
        due = statuses.seconds(failed["nextMirrorTime"])
        assert due is not None
        delays.append(due - now)
        plan, _ = step(failed, (owner("a"),), now=due - 1)
        assert plan.request is None  # not yet
        now = due
        plan, status = step(failed, (owner("a"),), now=now)
        assert plan.reason == "retry" and plan.request is not None
        assert status["phase"] == "Mirroring"
        assert plan.request.generation == attempt + 1
    base = [10, 20, 40, 80, 80]
    for delay, expected in zip(delays, base, strict=True):
        assert expected * 0.8 - 1 <= delay <= expected * 1.2 + 1
    # a permanent failure waits the longest
    failed = apply(status, result(status["mirrorGeneration"], ok=False, retryable=False),
                   now=now)
    assert failed is not None
    assert statuses.seconds(failed["nextMirrorTime"]) == pytest.approx(now + 80, abs=1)


def test_a_mirror_that_never_answers_is_asked_again_after_the_timeout() -> None:
    _, status = step({"phase": "Pending"}, (owner("a"),), now=0)
    plan, _ = step(status, (owner("a"),), now=59)
    assert plan.request is None
    plan, later = step(status, (owner("a"),), now=61)
    assert plan.reason == "timeout" and plan.request is not None
    assert (plan.request.generation, plan.request.attempt) == (2, 1)
    assert "no mirror answered" in later["message"]
    # the late answer to the first request is stale now
    assert apply(later, result(1), now=62) is None
    assert apply(later, result(2), now=62) is not None


def test_mutable_tags_are_refreshed_digests_never() -> None:
    rules = Rules(**{**RULES.__dict__, "refresh_interval": 3600})
    _, status = step({"phase": "Pending"}, (owner("a"),), now=0, rules=rules)
    done = apply(status, result(1), now=10, rules=rules)
    assert done is not None and statuses.seconds(done["nextMirrorTime"]) == 3610
    plan, refreshing = step(done, (owner("a"),), now=3611, rules=rules)
    assert plan.reason == "refresh" and refreshing["phase"] == "Available"
    moved = apply(refreshing, result(2, digest="sha256:" + "b" * 64), now=3620, rules=rules)
    assert moved is not None and moved["digest"] == "sha256:" + "b" * 64
    assert "the tag moved" in moved["message"]
    # a failed refresh keeps the copy it has
    plan, refreshing = step(moved, (owner("a"),), now=7300, rules=rules)
    kept = apply(refreshing, result(3, ok=False), now=7301, rules=rules)
    assert kept is not None and kept["phase"] == "Available"
    assert kept["digest"] == "sha256:" + "b" * 64
    assert not statuses.is_mutable("acr.io/x@sha256:" + "c" * 64)


def test_references_are_counted_exactly_and_listed_bounded() -> None:
    many = tuple(owner(uid, ns) for uid, ns in (("c", "b"), ("a", "a"), ("b", "a")))
    _, status = step({"phase": "Available"}, many, now=5)
    assert status["references"]["count"] == 3
    assert [o["uid"] for o in status["references"]["owners"]] == ["a", "b"]
    assert status["lastReferencedTime"] == statuses.timestamp(5)
    assert "unreferencedSince" not in status
    plan, dropped = step(status, (), now=9)
    assert dropped["references"] == {"count": 0, "owners": []}
    assert dropped["unreferencedSince"] == statuses.timestamp(9)
    assert plan.request is None and plan.wake_at is None
    record = statuses.record_of(artifact(dropped), now=10)
    assert record is not None and (record.references, record.unreferenced_since) == (0, 9)
    # referenced again: the grace period no longer runs
    _, back = step(dropped, (owner("z"),), now=20)
    assert "unreferencedSince" not in back and back["references"]["count"] == 1


def test_deleting_is_gc_s_unless_someone_references_it_again() -> None:
    deleting = {"phase": "Deleting", "references": {"count": 0, "owners": []},
                "mirrorGeneration": 3}
    assert step(deleting, (), now=1)[0] == Plan()
    plan, status = step(deleting, (owner("a"),), now=2)
    assert status["phase"] == "Pending" and plan.again and plan.request is None
    plan, status = step(status, (owner("a"),), now=3)
    assert plan.reason == "first" and plan.request is not None
    assert plan.request.generation == 4
    # a late result for a Deleting artifact changes nothing
    assert apply({**deleting, "mirrorGeneration": 3}, result(3), now=4) is None


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0"), (1, "1"), (1023, "1023"), (1024, "1Ki"), (1126, "1.1Ki"), (1536, "1.5Ki"),
    (10188, "9.9Ki"), (10189, "10Ki"), (10240, "10Ki"), (987030, "964Ki"),
    (1048575, "1Mi"),  # 1023.999Ki rounds to 1024Ki: 1Mi, never 1024Ki
    (1048576, "1Mi"), (1288490189, "1.2Gi"), (1073741824, "1Gi"), (5 * 1024**4, "5Ti"),
    (1536 * 1024**4, "1.5Pi"), (1024**7, "1024Ei"),
])
def test_human_sizes_read_as_kubectl_quantities(size: int, shown: str) -> None:
    assert statuses.human_size(size) == shown


def test_a_negative_size_is_not_a_size() -> None:
    with pytest.raises(ValueError, match="negative"):
        statuses.human_size(-1)


def test_short_digests_and_platforms() -> None:
    assert statuses.short_digest("sha256:ab12cd34ef56" + "7" * 52) == "sha256:ab12cd34ef56"
    assert statuses.short_digest("ab12cd34ef567890") == "ab12cd34ef56"
    assert statuses.short_platforms(["linux/amd64", "linux/arm64"]) == "linux/amd64,linux/arm64"
    assert statuses.short_platforms(["a", "b", "c"]) == "a,b,c"
    assert statuses.short_platforms(["a", "b", "c", "d", "e"]) == "a,b,c,+2"
    assert statuses.short_platforms([]) == ""


def test_the_display_fields_follow_size_digest_and_platforms() -> None:
    _, status = step({"phase": "Pending"}, (owner("a"),), now=0)
    assert not {"sizeHuman", "digestShort", "platformsShort"} & set(status)
    done = apply(status, result(1, digest="sha256:" + "ab" * 32), now=5)
    assert done is not None
    assert (done["sizeHuman"], done["digestShort"], done["platformsShort"]) == (
        "123", "sha256:abababababab", "linux/amd64")
    # an Artifact written before these fields existed gets them on its next reconcile
    old = {k: v for k, v in done.items() if k not in ("sizeHuman", "digestShort")}
    plan, fixed = step(old, (owner("a"),), now=6)
    assert plan.status == {"sizeHuman": "123", "digestShort": "sha256:abababababab"}
    assert fixed == done
    # and a status without platforms shows none
    plan, _ = step({**done, "platforms": []}, (owner("a"),), now=7)
    assert plan.status == {"platformsShort": None}


MiB = 1 << 20


def progress(generation: int, done: int, *, total: int = 256 * MiB,
             at: float = 100.0) -> MirrorProgress:
    return MirrorProgress(artifact=NAME, generation=generation, bytes_done=done,
                          bytes_total=total, time=at)


def on_progress(status: dict[str, Any], message: MirrorProgress, *, now: float,
                last: float | None = None, rules: Rules = RULES) -> dict[str, Any] | None:
    """The progress patch, applied as the API server would merge it; None: no write."""
    patch = statuses.on_progress(message, artifact(status), now=now, rules=rules,
                                 last_patched=last)
    if patch is None:
        return None
    merged = dict(status)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize(("done", "total", "shown"), [
    (0, 256 * MiB, "0/256Mi (0%)"),
    (120 * MiB, 256 * MiB, "120Mi/256Mi (46%)"),
    (256 * MiB - 1, 256 * MiB, "256Mi/256Mi (99%)"),  # 100% only once all is done
    (8 * MiB, 8 * MiB, "8Mi/8Mi (100%)"),
])
def test_human_progress(done: int, total: int, shown: str) -> None:
    assert statuses.human_progress(done, total) == shown


def test_progress_is_written_while_mirroring_its_generation_rate_limited() -> None:
    _, mirroring = step({"phase": "Pending"}, (owner("a"),), now=0)
    generation = mirroring["mirrorGeneration"]
    shown = on_progress(mirroring, progress(generation, 120 * MiB, at=100.0), now=100.5)
    assert shown is not None
    assert shown["progress"] == {"bytesDone": 120 * MiB, "bytesTotal": 256 * MiB,
                                 "updated": statuses.timestamp(100)}
    assert shown["progressHuman"] == "120Mi/256Mi (46%)"
    assert shown["phase"] == "Mirroring" and shown["conditions"] == mirroring["conditions"]
    # at most one write per interval (5 s): by this process's clock, and by the time stored
    assert on_progress(shown, progress(generation, 130 * MiB, at=102.0), now=101.0,
                       last=100.5) is None
    assert on_progress(shown, progress(generation, 130 * MiB, at=102.0), now=106.0,
                       last=100.5) is None  # another replica wrote it 2 s before
    later = on_progress(shown, progress(generation, 200 * MiB, at=105.5), now=106.0,
                        last=100.5)
    assert later is not None and later["progressHuman"] == "200Mi/256Mi (78%)"
    # nothing new, an older message, and a total not known: no write
    assert on_progress(later, progress(generation, 200 * MiB, at=111.0), now=112) is None
    assert on_progress(later, progress(generation, 210 * MiB, at=99.0), now=112) is None
    assert on_progress(mirroring, progress(generation, 0, total=0), now=112) is None
    # 0: progress is never written
    off = Rules(**{**RULES.__dict__, "progress_interval": 0})
    assert on_progress(mirroring, progress(generation, 1), now=100, rules=off) is None


def test_progress_of_another_generation_or_outside_mirroring_is_ignored() -> None:
    _, mirroring = step({"phase": "Pending"}, (owner("a"),), now=0)
    generation = mirroring["mirrorGeneration"]
    assert on_progress(mirroring, progress(generation - 1, MiB), now=100) is None
    assert on_progress(mirroring, progress(generation + 1, MiB), now=100) is None
    for phase in ("Pending", "Available", "Failed", "Deleting"):  # a refresh shows none either
        assert on_progress({**mirroring, "phase": phase}, progress(generation, MiB),
                           now=100) is None


def test_the_result_clears_progress_and_so_does_a_new_request() -> None:
    _, mirroring = step({"phase": "Pending"}, (owner("a"),), now=0)
    generation = mirroring["mirrorGeneration"]
    shown = on_progress(mirroring, progress(generation, 120 * MiB, at=10.0), now=10)
    assert shown is not None
    # a reconcile while the copy runs keeps it
    plan, kept = step(shown, (owner("a"),), now=11)
    assert plan.status is None and kept["progressHuman"] == "120Mi/256Mi (46%)"
    for outcome in (result(generation), result(generation, ok=False)):
        ended = apply(shown, outcome, now=12)
        assert ended is not None and ended["phase"] in ("Available", "Failed")
        assert "progress" not in ended and "progressHuman" not in ended
    # no answer within the timeout: a new generation, whose progress starts from nothing
    plan, asked = step(shown, (owner("a"),), now=61)
    assert plan.reason == "timeout" and asked["phase"] == "Mirroring"
    assert "progress" not in asked and "progressHuman" not in asked
