"""The pure choice of garbage: grace period, in-flight phases, and shared-manifest protection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clusterregistry.gc.selecting import (
    Tree,
    choose,
    manifests_to_delete,
    referenced_images,
    still_released,
    tags_left_behind,
)
from clusterregistry.schemas import ArtifactRecord, OwnerRecord

NOW = 1_000_000.0


def _record(name: str, source: str, *, phase: str = "Available", since: float = 0.0
            ) -> ArtifactRecord:
    return ArtifactRecord(name=name, source=source, local=f"edge:5000/x/{name}",
                          phase=phase, unreferenced_since=since)  # type: ignore[arg-type]


def test_referenced_images_are_canonical() -> None:
    owners = [OwnerRecord(uid="u", kind="Pod", namespace="n", name="p",
                          images=["nginx", "quay.io/a/b:1", "not a reference!"])]
    assert referenced_images(owners) == {
        "docker.io/library/nginx:latest", "quay.io/a/b:1", "not a reference!"}


def test_choose() -> None:
    records = [
        _record("used", "docker.io/library/nginx:latest", since=NOW - 10_000),
        _record("old", "quay.io/a/old:1", since=NOW - 7200),
        _record("recent", "quay.io/a/recent:1", since=NOW - 60),
        _record("unmarked", "quay.io/a/unmarked:1", since=0.0),
        _record("copying", "quay.io/a/copying:1", phase="Mirroring", since=NOW - 7200),
        _record("failed", "quay.io/a/failed:1", phase="Failed", since=NOW - 7200),
        _record("again", "quay.io/a/again:1", phase="Deleting", since=NOW - 7200),
    ]
    choice = choose(records, {"docker.io/library/nginx:latest"}, now=NOW, grace=3600)
    assert sorted(r.name for r in choice.garbage) == ["again", "failed", "old"]
    assert sorted(r.name for r in choice.waiting) == ["recent", "unmarked"]
    assert sorted(r.name for r in choice.kept) == ["copying", "used"]
    # a source spelled differently is still the same image
    short = choose([_record("n", "nginx", since=NOW - 7200)],
                   {"docker.io/library/nginx:latest"}, now=NOW, grace=0)
    assert [r.name for r in short.kept] == ["n"]


_digests = st.sampled_from([f"sha256:{c * 64}" for c in "0123456789abcdef"])
_trees = st.builds(lambda repo, ds: Tree(repo, tuple(dict.fromkeys(ds))),
                   st.sampled_from(["r1", "r2"]), st.lists(_digests, min_size=1, max_size=4))


@given(garbage=st.dictionaries(st.sampled_from("abcdef"), _trees, max_size=5),
       live=st.lists(_trees, max_size=5))
def test_no_live_manifest_is_ever_deleted_and_nothing_twice(
    garbage: dict[str, Tree], live: list[Tree],
) -> None:
    plan = manifests_to_delete(garbage, live)
    protected = {(t.repository, d) for t in live for d in t.digests}
    deleted = [(garbage[name].repository, d) for name, ds in plan.items() for d in ds]
    assert not set(deleted) & protected
    assert len(deleted) == len(set(deleted))
    # and everything unprotected of a garbage image does go
    wanted = {(t.repository, d) for t in garbage.values() for d in t.digests} - protected
    assert set(deleted) == wanted
    # an index goes before its children
    for name, ds in plan.items():
        order = [d for d in garbage[name].digests if d in ds]
        assert ds == order


def test_shared_child_protected_in_its_repository_only() -> None:
    a, b, c = (f"sha256:{x * 64}" for x in "abc")
    plan = manifests_to_delete({"g": Tree("r1", (a, b, c))}, [Tree("r1", (b,)), Tree("r2", (c,))])
    assert plan == {"g": [a, c]}


def test_a_tag_whose_manifest_is_kept_is_left_behind_and_a_digest_leaves_none() -> None:
    shared = Tree("r", ("sha256:d",))
    garbage = {"by-tag": ("1", shared), "by-digest": ("sha256:d", shared),
               "alone": ("2", Tree("r", ("sha256:e",)))}
    # a live image has sha256:d: nothing of it is deleted, so the tag `1` stays
    plan = manifests_to_delete({name: tree for name, (_, tree) in garbage.items()},
                               [Tree("r", ("sha256:d",))])
    assert plan == {"by-tag": [], "by-digest": [], "alone": ["sha256:e"]}
    assert tags_left_behind(garbage, plan) == {"by-tag": ("r", "1", "sha256:d")}
    # nothing live: sha256:d is deleted (once, under either name), which untags `1`
    plan = manifests_to_delete({name: tree for name, (_, tree) in garbage.items()}, [])
    assert tags_left_behind(garbage, plan) == {}


def test_a_released_tag_is_nobodys_only_while_it_names_the_same_manifest() -> None:
    released = {("r", "1"): "sha256:d"}
    assert still_released(Tree("r", ("sha256:d",)), "1", released)
    # pushed again since, to another image: someone's tag now
    assert not still_released(Tree("r", ("sha256:f",)), "1", released)
    # never released, another repository, or gone
    assert not still_released(Tree("r", ("sha256:d",)), "2", released)
    assert not still_released(Tree("s", ("sha256:d",)), "1", released)
    assert not still_released(None, "1", released)
