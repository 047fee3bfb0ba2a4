"""What is garbage, decided without I/O: the grace period and shared-manifest protection.

An Artifact is garbage only when all of these hold:
- no owner record lists its source (`references.canonical`), the tracker's view;
- the reconciler has recorded when its last reference ended (`unreferencedSince`):
  an artifact unreferenced by the owner records but not yet marked so by the
  reconciler is in flux, and its grace period cannot be counted;
- that was longer ago than the grace period, which protects an image a new owner
  is about to use (a Deployment's rollout creates the new ReplicaSet's record
  moments after the old one's pods are gone);
- it is not being copied (Pending, Mirroring): the reconciler owns it then.

Deleting an image's manifests through the registry API is what lets the sweep
free its blobs. A manifest belongs to a repository, not to a tag, so one
manifest (a multi-arch child, or the same image under two tags) can be part of
a live image too; such a manifest is never deleted. Children that nothing live
uses are deleted with their index: distribution's sweep keeps every manifest
still linked in a repository (without `--delete-untagged`, which would also
delete the children of live indexes), so children left behind would never be
freed.

A kept manifest leaves the collected image's tag behind: distribution 2.8
deletes a manifest by digest (untagging every tag that names it) but no tag on
its own. Every tag in a repository counts as live (someone may have pushed
it), except the tags GC itself left behind this way, while they still name
the manifest they named then (`released`): otherwise the tag of an image
collected first would keep the manifest, and its blobs, after the last image
that needed it is collected too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clusterregistry import references
from clusterregistry.schemas import ArtifactRecord, OwnerRecord

# phases the reconciler is still working on: never collected
_IN_FLIGHT = frozenset({"Pending", "Mirroring"})


def canonical_or_raw(image: str) -> str:
    """`references.canonical`, or the text itself when it does not parse (it then matches
    only itself, which errs on the side of keeping)."""
    try:
        return references.canonical(image)
    except ValueError:
        return image


def referenced_images(owners: Iterable[OwnerRecord]) -> set[str]:
    """Every source image some owner uses."""
    return {canonical_or_raw(image) for owner in owners for image in owner.images}


@dataclass(frozen=True)
class Choice:
    garbage: list[ArtifactRecord] = field(default_factory=list)
    # unreferenced, but within the grace period (or not yet marked by the reconciler)
    waiting: list[ArtifactRecord] = field(default_factory=list)
    kept: list[ArtifactRecord] = field(default_factory=list)


def choose(
    records: Iterable[ArtifactRecord], referenced: set[str], *, now: float, grace: float
) -> Choice:
    """Split the artifact records into garbage, waiting (grace) and kept."""
    choice = Choice()
    for record in records:
        if canonical_or_raw(record.source) in referenced or record.phase in _IN_FLIGHT:
            choice.kept.append(record)
        elif record.unreferenced_since <= 0 or now - record.unreferenced_since < grace:
            choice.waiting.append(record)
        else:
            choice.garbage.append(record)
    return choice


@dataclass(frozen=True)
class Tree:
    """An image as stored in one repository: its top manifest first, then its children."""

    repository: str
    digests: tuple[str, ...]


def still_released(tree: Tree | None, version: str,
                   released: Mapping[tuple[str, str], str]) -> bool:
    """Whether the tag `version` of `tree.repository` is one GC left behind and still names
    the manifest it named then (a tag pushed again since, to anything, is live)."""
    if tree is None or not tree.digests:
        return False
    return released.get((tree.repository, version)) == tree.digests[0]


def tags_left_behind(
    garbage: Mapping[str, tuple[str, Tree]], plan: Mapping[str, list[str]]
) -> dict[str, tuple[str, str, str]]:
    """Per garbage artifact named by a tag, `(repository, tag, digest)` when its top
    manifest is not deleted (a live image has it), so the tag stays in the registry.
    `garbage`: name -> (version, tree); `plan`: `manifests_to_delete`'s answer."""
    deleted = {(garbage[name][1].repository, digest)
               for name, digests in plan.items() if name in garbage for digest in digests}
    left: dict[str, tuple[str, str, str]] = {}
    for name, (version, tree) in garbage.items():
        if ":" in version or not tree.digests:
            continue  # a digest reference leaves no tag
        if (tree.repository, tree.digests[0]) not in deleted:
            left[name] = (tree.repository, version, tree.digests[0])
    return left


def manifests_to_delete(
    garbage: Mapping[str, Tree], live: Iterable[Tree]
) -> dict[str, list[str]]:
    """Per garbage artifact, the manifests to delete: its own, minus any a live image in the
    same repository also has, each deleted once, index before children (so no index is
    ever served whose children are already gone)."""
    protected: dict[str, set[str]] = {}
    for tree in live:
        protected.setdefault(tree.repository, set()).update(tree.digests)
    taken: set[tuple[str, str]] = set()
    plan: dict[str, list[str]] = {}
    for name, tree in garbage.items():
        keep = protected.get(tree.repository, set())
        digests: list[str] = []
        for digest in tree.digests:
            if digest in keep or (tree.repository, digest) in taken:
                continue
            taken.add((tree.repository, digest))
            digests.append(digest)
        plan[name] = digests
    return plan
