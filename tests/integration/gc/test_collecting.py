"""GC runs against a real registry and real NATS: threshold, grace, multi-arch, the re-check,
and the events a run leaves behind."""

from __future__ import annotations

import asyncio

import pytest

from clusterregistry import references
from clusterregistry.gc.sweeping import SweepResult
from clusterregistry.kube.artifacts import Artifacts
from clusterregistry.kube.clients import api_client
from clusterregistry.oci.manifests import OCI_INDEX
from clusterregistry_sandbox.uploading import upload
from kubesim.resources import Resource
from kubesim.running import Cluster
from tests.integration.gc.conftest import GcWorld, Image

pytestmark = pytest.mark.integration


async def test_threshold_below_keeps_everything_above_collects_and_du_shrinks(
    gc_world: GcWorld,
) -> None:
    world = gc_world
    live = [await world.add(f"src.example.io/app/live{i}:1", layer_sizes=(64_000,))
            for i in range(2)]
    dead = [await world.add(f"src.example.io/app/dead{i}:1", referenced=False,
                            layer_sizes=(64_000,)) for i in range(2)]
    du_before = await world.du()
    blobs = sum(64_000 for _ in range(4))
    storage = 4 * blobs  # usage just over 25%
    below = world.collector(threshold=90, storage_bytes=storage)
    await below.ensure()
    result = await below.run()
    assert result.event == "skipped" and "below the threshold" in result.message
    for image in live + dead:
        assert await world.pullable(image)
    assert await world.du() == du_before

    above = world.collector(threshold=20, storage_bytes=storage)
    result = await above.run()
    assert result.event == "finished", result.message
    assert result.deleted == 2 and result.bytes_freed > 2 * 64_000
    for image in live:
        assert await world.pullable(image)
        assert (await world.record(image.name)) is not None
    for image in dead:
        assert not await world.pullable(image)
        assert await world.record(image.name) is None
        for blob in image.blobs:
            assert not await world.blob_exists(blob)
    assert await world.du() < du_before - 2 * 64_000
    kinds = [e["event"] for e in await world.events()]
    assert kinds == ["started", "skipped", "started", "artifact_deleted", "artifact_deleted",
                     "swept", "finished"]


async def test_grace_period_and_dry_run(gc_world: GcWorld) -> None:
    world = gc_world
    recent = await world.add("src.example.io/app/recent:1", referenced=False,
                             unreferenced_for=10)
    old = await world.add("src.example.io/app/old:1", referenced=False, unreferenced_for=7200)
    collector = world.collector(grace_period_seconds=3600)
    await collector.ensure()
    dry = await collector.run(dry_run=True)
    assert dry.event == "finished" and dry.dry_run and dry.deleted == 1
    assert old.name in dry.message and recent.name not in dry.message
    assert await world.pullable(old)  # a dry run changes nothing
    result = await collector.run()
    assert result.deleted == 1
    assert await world.pullable(recent) and not await world.pullable(old)


async def test_multi_arch_referenced_keeps_every_child_unreferenced_loses_all(
    gc_world: GcWorld,
) -> None:
    world = gc_world
    platforms = ("linux/amd64", "linux/arm64", "linux/arm/v7")
    kept = await world.add("src.example.io/multi/kept:1", platforms=platforms, seed=11)
    gone = await world.add("src.example.io/multi/gone:1", platforms=platforms, seed=12,
                           referenced=False)
    # the same image under a second tag in the same repository: it shares every manifest
    # with a garbage one, and must lose none of them
    twin_of_gone = await world.add("src.example.io/multi/gone:2", platforms=platforms,
                                   seed=12, same_as=gone.source)
    assert twin_of_gone.digest == gone.digest and len(gone.children) == 3
    other = await world.add("src.example.io/multi/other:1", platforms=platforms, seed=13,
                            referenced=False)
    collector = world.collector()
    await collector.ensure()
    result = await collector.run()
    assert result.event == "finished", result.message
    media_type, _, _ = await world.client.get_manifest(kept.repository, kept.local.tag)
    assert media_type == OCI_INDEX
    for image in (kept, twin_of_gone):
        assert await world.pullable(image)
        for child in image.children:
            assert await world.manifest_exists(image.repository, child)
        for blob in image.blobs:
            assert await world.blob_exists(blob)
    # `other` had nothing shared: its index, every child and every blob are gone
    assert not await world.manifest_exists(other.repository, other.digest)
    for child in other.children:
        assert not await world.manifest_exists(other.repository, child)
    for blob in other.blobs:
        assert not await world.blob_exists(blob)
    assert await world.record(gone.name) is None  # collected, though its manifests stay


async def test_a_tag_left_behind_goes_with_the_last_image_that_needed_its_manifest(
    gc_world: GcWorld,
) -> None:
    """A tag and a digest pin of one image: the tag's Artifact is collected first, while the
    pin is live, so the manifest stays and (distribution 2.8 deletes no tag alone) the tag
    too. Once the pin is collected, the manifest goes, the tag with it, and every blob."""
    world = gc_world
    tagged = await world.add("src.example.io/app/shared:1", referenced=False, seed=21,
                             layer_sizes=(32_000,))
    pin_ref = references.parse(f"src.example.io/app/shared@{tagged.digest}")
    pinned = Image(source=str(pin_ref), name=references.artifact_name(pin_ref),
                   local=references.to_local(pin_ref, world.registry.host),
                   digest=tagged.digest, children=(), blobs=tagged.blobs)
    assert pinned.repository == tagged.repository
    world.images[pinned.source] = pinned
    await world.write_record(pinned)
    await world.reference(pinned.source)
    # a tag someone else pushed keeps its own image, whatever GC left behind
    other = await world.add("src.example.io/app/shared:2", referenced=False, seed=22,
                            layer_sizes=(32_000,))
    await upload(world.client, world.builder.build(
        "pushed-by-hand", tag="by-hand", layer_sizes=(16_000,), seed=23),
        tagged.repository, "by-hand")

    collector = world.collector()
    await collector.ensure()
    first = await collector.run()
    assert first.event == "finished" and first.deleted == 2, first.message
    assert await world.record(tagged.name) is None and await world.record(other.name) is None
    assert await world.pullable(pinned)
    assert await world.manifest_exists(tagged.repository, tagged.digest)
    assert "1" in await world.client.list_tags(tagged.repository)

    await world.unreference(pinned.source)
    second = await collector.run()
    assert second.event == "finished" and second.deleted == 1, second.message
    assert not await world.manifest_exists(tagged.repository, tagged.digest)
    assert await world.client.list_tags(tagged.repository) == ["by-hand"]
    for blob in tagged.blobs:
        assert not await world.blob_exists(blob)
    # the bucket forgets the tag once it is gone
    tags = await collector._released_tags()
    assert {key for key, found in (await tags.snapshot()).items() if not found.deleted} == set()


async def test_a_reference_appearing_during_the_run_wins(gc_world: GcWorld) -> None:
    world = gc_world
    image = await world.add("src.example.io/app/late:1", referenced=False)
    collector = world.collector()
    await collector.ensure()
    original = collector._mark_deleting

    async def mark_then_reference(record, revision):  # type: ignore[no-untyped-def]
        held = await original(record, revision)
        # a new owner arrives just after GC marked the artifact Deleting
        await world.reference(image.source)
        return held

    collector._mark_deleting = mark_then_reference  # type: ignore[method-assign]
    result = await collector.run()
    assert result.event == "finished" and result.deleted == 0
    assert "kept 1 referenced meanwhile" in result.message
    assert await world.pullable(image)
    record = await world.record(image.name)
    assert record is not None and record.phase == "Available"


async def test_artifact_objects_marked_deleting_then_deleted_or_restored(
    gc_world: GcWorld, kube_api: Cluster, artifact_crd_installed: Resource,
) -> None:
    """With the API server: a collected image's Artifact is marked Deleting, then deleted; a
    kept one is untouched; one whose reference came back meanwhile is restored."""
    world = gc_world
    live = await world.add("src.example.io/app/live:1")
    dead = await world.add("src.example.io/app/dead:1", referenced=False)
    late = await world.add("src.example.io/app/late:1", referenced=False)
    # unreferenced in KV, but its Artifact already counts a reference (the reconciler is ahead
    # of the records GC read): GC must leave it alone
    ahead = await world.add("src.example.io/app/ahead:1", referenced=False)
    api = await api_client(str(kube_api.kubeconfig))
    try:
        artifacts = Artifacts(api)
        for image in (live, dead, late, ahead):
            await artifacts.create({"metadata": {"name": image.name},
                                    "spec": {"sourceArtifact": image.source,
                                             "localArtifact": str(image.local)}})
            await artifacts.patch_status(image.name, {
                "phase": "Available", "digest": image.digest,
                "references": {"count": 1 if image is ahead else 0}})
        collector = world.collector(artifacts=artifacts)
        await collector.ensure()
        phases_seen: dict[str, str] = {}
        original = collector._mark_deleting

        async def observe(record, revision):  # type: ignore[no-untyped-def]
            held = await original(record, revision)
            current = await artifacts.get(record.name)
            assert current is not None
            if held is not None:
                phases_seen[record.name] = current["status"]["phase"]
            else:
                assert current["status"]["phase"] == "Available"  # left exactly as it was
            if record.name == late.name:
                await world.reference(late.source)  # a new owner, just too late for GC
            return held

        collector._mark_deleting = observe  # type: ignore[method-assign]
        result = await collector.run()
        assert result.event == "finished" and result.deleted == 1, result.message
        assert phases_seen == {dead.name: "Deleting", late.name: "Deleting"}
        assert await artifacts.get(dead.name) is None
        restored = await artifacts.get(late.name)
        assert restored is not None and restored["status"]["phase"] == "Available"
        for image in (live, ahead):
            kept = await artifacts.get(image.name)
            assert kept is not None and kept["status"]["phase"] == "Available"
            record = await world.record(image.name)
            assert record is not None and record.phase == "Available"
            assert await world.pullable(image)
        assert await world.pullable(late) and await world.pullable(live)
        assert not await world.pullable(dead)
    finally:
        await api.close()


async def test_two_replicas_never_run_at_once(gc_world: GcWorld) -> None:
    """A second GC replica asked while the first runs is skipped by the lock; nothing is
    collected twice, and the second collects normally once the first is done."""
    world = gc_world
    for i in range(4):
        await world.add(f"src.example.io/app/dead{i}:1", referenced=False)
    first, second = world.collector(holder="gc-a"), world.collector(holder="gc-b")
    await first.ensure()
    assert first.sweeper is not None
    real_sweep = first.sweeper.sweep
    sweeping, may_finish = asyncio.Event(), asyncio.Event()

    async def held_sweep(*, run: str) -> SweepResult:
        sweeping.set()
        await may_finish.wait()
        return await real_sweep(run=run)

    first.sweeper.sweep = held_sweep  # type: ignore[method-assign]
    running = asyncio.create_task(first.run())
    await asyncio.wait_for(sweeping.wait(), 30)
    skipped = await second.run()
    assert skipped.event == "skipped" and "the GC lock is held by gc-a" in skipped.message
    may_finish.set()
    done = await running
    assert done.event == "finished" and done.deleted == 4
    again = await second.run()
    assert again.event == "finished" and again.deleted == 0
