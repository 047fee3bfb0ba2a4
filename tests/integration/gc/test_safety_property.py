"""Property: whatever the sequence of owners coming and going, pod churn, mirrors and GC runs,
after every GC each image a live owner references is pullable and complete (skopeo), every
artifact record and Artifact object (kubesim) matches the registry, and what stayed
unreferenced past the grace period is gone. Real registry, real NATS; the tracker's and
reconciler's records are written as they write them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.schemas import OwnerRecord, encode
from kubesim.resources import Resource
from kubesim.running import Cluster
from tests.integration.gc.conftest import GcWorld

pytestmark = pytest.mark.integration

T = TypeVar("T")
GRACE = 3600.0

# (source, platforms, same content as) — two share a layer seed, two are one image under two
# tags of one repository, three are multi-arch
POOL: list[tuple[str, tuple[str, ...], str | None]] = [
    ("src.example.io/p/one:1", ("linux/amd64",), None),
    ("src.example.io/p/two:1", ("linux/amd64",), None),
    ("src.example.io/p/multi:1", ("linux/amd64", "linux/arm64"), None),
    ("src.example.io/p/shared:a", ("linux/amd64", "linux/arm64"), None),
    ("src.example.io/p/shared:b", ("linux/amd64", "linux/arm64"), "src.example.io/p/shared:a"),
]
SEEDS = [1, 1, 2, 3, 3]

_image = st.integers(0, len(POOL) - 1)
_owner = st.integers(0, 3)
_op = st.one_of(
    st.tuples(st.just("own"), _owner, _image),
    st.tuples(st.just("disown"), _owner, st.booleans()),  # True: long enough ago
    st.tuples(st.just("churn"), _owner, st.just(0)),
    st.tuples(st.just("gc"), st.just(0), st.just(0)),
)


class Model:
    def __init__(self, world: GcWorld, artifacts: Artifacts, stats: dict[str, int]) -> None:
        self.world = world
        self.artifacts = artifacts
        self.stats = stats
        self.owners: dict[int, set[int]] = {}
        self.mirrored: set[int] = set()
        self.old_unreferenced: set[int] = set()  # unreferenced past the grace period

    def referenced(self) -> set[int]:
        return set().union(*self.owners.values()) if self.owners else set()

    async def reset(self) -> None:
        for kv in (self.world.refs, self.world.records):
            for key in await _keys(kv):
                await kv.purge(key)
        for item in await self.artifacts.list():
            await self.artifacts.delete(item["metadata"]["name"])

    async def own(self, owner: int, index: int) -> None:
        source, platforms, same_as = POOL[index]
        if index not in self.mirrored:  # the reconciler asks, the mirror copies
            image = await self.world.add(source, platforms=platforms, seed=SEEDS[index],
                                         same_as=same_as, referenced=False)
            self.mirrored.add(index)
            if await self.artifacts.get(image.name) is None:  # the reconciler's Artifact
                await self.artifacts.create({"metadata": {"name": image.name}, "spec": {
                    "sourceArtifact": image.source, "localArtifact": str(image.local)}})
            await self.artifacts.patch_status(image.name, {"phase": "Available",
                                                           "digest": image.digest})
        self.owners.setdefault(owner, set()).add(index)
        await self._put_owner(owner)
        await self._mark(index, since=0.0)
        self.old_unreferenced.discard(index)

    async def disown(self, owner: int, long_ago: bool) -> None:
        images = self.owners.pop(owner, None)
        if images is None:
            return
        await self.world.refs.delete(f"owner-{owner}")
        for index in images - self.referenced():
            if index in self.mirrored:
                await self._mark(index, since=time.time() - (2 * GRACE if long_ago else 10))
                if long_ago:
                    self.old_unreferenced.add(index)

    async def churn(self, owner: int) -> None:
        if owner in self.owners:  # pods replaced: the same images, a newer record
            await self._put_owner(owner)

    async def _put_owner(self, owner: int) -> None:
        images = sorted(POOL[i][0] for i in self.owners[owner])
        await self.world.refs.put(f"owner-{owner}", encode(OwnerRecord(
            uid=f"owner-{owner}", kind="ReplicaSet", namespace="default", name=f"rs-{owner}",
            images=images, resource_version=str(time.monotonic_ns()))))

    async def _mark(self, index: int, *, since: float) -> None:
        image = self.world.images[POOL[index][0]]
        record = await self.world.record(image.name)
        assert record is not None
        await self.world.records.put(image.name, encode(msgspec.structs.replace(
            record, unreferenced_since=since)))

    async def gc(self) -> None:
        collector = self.world.collector(grace_period_seconds=GRACE, artifacts=self.artifacts)
        await collector.ensure()
        result = await collector.run()
        assert result.event == "finished", result.message
        self.stats["gc"] += 1
        await self.check()

    async def check(self) -> None:
        world = self.world
        referenced = self.referenced()
        for index in referenced:
            image = world.images[POOL[index][0]]
            record = await world.record(image.name)
            assert record is not None and record.phase == "Available", POOL[index][0]
            assert await world.pullable(image), f"{POOL[index][0]} referenced, not pullable"
            self.stats["pulled"] += 1
        for index in list(self.mirrored):
            image = world.images[POOL[index][0]]
            record = await world.record(image.name)
            artifact = await self.artifacts.get(image.name)
            # the Artifact and the record come and go together
            assert (artifact is None) == (record is None), POOL[index][0]
            if record is None:
                assert index not in referenced and index in self.old_unreferenced
                self.mirrored.discard(index)
                self.old_unreferenced.discard(index)
                self.stats["collected"] += 1
                continue
            # record and Artifact match the registry: Available and its manifest there
            assert artifact is not None and artifact["status"]["phase"] == "Available"
            assert record.phase == "Available"
            digest = await world.client.head_manifest(image.repository, image.local.tag)
            assert digest == record.digest == artifact["status"]["digest"], POOL[index][0]
            # collected whenever unreferenced past the grace period
            assert index not in self.old_unreferenced, f"{POOL[index][0]} not collected"


async def _keys(kv: Any) -> list[str]:
    try:
        return list(await kv.keys())
    except Exception:  # nats-py raises NoKeysError for an empty bucket
        return []


def _run(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=300)


async def test_gc_never_breaks_a_referenced_image(
    gc_world: GcWorld, kube_api: Cluster, artifact_crd_installed: Resource,
) -> None:
    loop = asyncio.get_running_loop()
    api = await api_client(str(kube_api.kubeconfig))
    artifacts = Artifacts(api)
    examples: list[int] = []
    stats = {"gc": 0, "pulled": 0, "collected": 0}

    # hypothesis drives the examples from a worker thread; each step runs on this loop,
    # where the registry and NATS connections live
    @settings(max_examples=6)
    @given(ops=st.lists(_op, min_size=3, max_size=10))
    # one history written out, so every run covers the interesting case at least once: one
    # image under two tags, one tag collected while the other is referenced, then both
    @example(ops=[("own", 0, 0), ("own", 1, 2), ("own", 2, 3), ("own", 3, 4),
                  ("disown", 0, True), ("disown", 2, True), ("gc", 0, 0), ("churn", 1, 0),
                  ("disown", 3, True), ("disown", 1, False), ("gc", 0, 0)])
    def run(ops: list[tuple[str, int, Any]]) -> None:
        model = Model(gc_world, artifacts, stats)
        _run(loop, model.reset())
        for op, a, b in [*ops, ("gc", 0, 0)]:
            if op == "own":
                _run(loop, model.own(a, b))
            elif op == "disown":
                _run(loop, model.disown(a, b))
            elif op == "churn":
                _run(loop, model.churn(a))
            else:
                _run(loop, model.gc())
        examples.append(len(ops))

    try:
        await asyncio.to_thread(run)
    finally:
        await api.close()
    # not vacuous: runs happened, referenced images were checked, garbage was collected
    assert len(examples) >= 4, examples
    assert stats["gc"] >= 4 and stats["pulled"] > 0 and stats["collected"] > 0, stats
