"""The chaos soak's checker (issue 17): it fails on a broken build, and a short soak passes.

The broken build is honest: the GC process alone gets a `sitecustomize` on its PYTHONPATH
that makes its collector ignore DaemonSets' reference records, as a GC that forgot one
owner kind would. The product guards an image three times (GC's own reading of the
records, the reconciler's unreferencedSince mark and the Artifact's reference count, the
last two from the reconciler): with only the first broken nothing is lost, which is worth
knowing, so the broken GC also skips the other two, trusting its own reading alone.
Nothing else changes; the checker must see the Artifact of a live, recorded DaemonSet
deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import pytest

from clusterregistry import references
from clusterregistry_sandbox.soaking import (
    Pool,
    Soak,
    SoakOptions,
    SoakReport,
    daemonset,
    deployment,
    prepare_namespace,
    run_soak,
)
from clusterregistry_sandbox.supervising import wait_for
from tests.e2e.conftest import SystemFactory

pytestmark = pytest.mark.e2e

BROKEN_GC = '''\
"""A deliberately broken GC for the soak checker's test: it ignores DaemonSets.

GC has three guards, and each alone keeps an image a DaemonSet uses: its own reading of
the reference records, the reconciler's `unreferencedSince` mark, and the Artifact's
reference count (both written by the reconciler from the same records). A GC that
trusts only its own reading, and gets it wrong, loses all three; so this one does.
"""
import os

if os.environ.get("POD_NAME", "").startswith("gc"):
    import msgspec

    from clusterregistry.gc import collecting, selecting

    _owners = collecting.Collector._owners
    _choose = selecting.choose

    async def _without_daemonsets(self):
        return [o for o in await _owners(self) if o.kind != "DaemonSet"]

    def _without_the_mark(records, referenced, *, now, grace):
        records = [msgspec.structs.replace(r, unreferenced_since=r.unreferenced_since or 1.0)
                   for r in records]
        return _choose(records, referenced, now=now, grace=grace)

    async def _without_the_count(self, name):
        for _ in range(2):
            current = await self.artifacts.get(name)
            if current is None:
                return "absent"
            version = (current.get("metadata") or {}).get("resourceVersion")
            try:
                await self.artifacts.patch_status(name, {"phase": "Deleting"},
                                                  resource_version=version)
            except collecting.ConflictError:
                continue
            return "marked"
        return "changed"

    collecting.Collector._owners = _without_daemonsets
    collecting.Collector._mark_artifact = _without_the_count
    selecting.choose = _without_the_mark
'''


async def test_the_checker_reports_a_gc_that_ignores_daemonsets(
        make_system: SystemFactory, tmp_path: Path) -> None:
    broken = tmp_path / "broken-gc"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(BROKEN_GC)
    system = await make_system(service_env={"gc": {"PYTHONPATH": str(broken)}})
    report = SoakReport(minutes=0, seed=5)
    soak = Soak(system, SoakOptions(seed=5, repositories=2), report)
    watch: asyncio.Task[None] | None = None
    try:
        soak.pool = Pool(system, random.Random(5), 2)
        await soak.pool.fill(per_repository=1)
        daemon_image, other_image = soak.pool.versions[0], soak.pool.versions[1]
        await soak.connect()
        await prepare_namespace(soak.api, system)
        await soak.api.create(daemonset("agent", daemon_image.reference))
        await soak.api.create(deployment("web", other_image.reference, 1))
        watch = asyncio.create_task(soak.watch_artifacts())
        name = references.artifact_name(references.parse(daemon_image.reference))

        async def recorded_and_available() -> bool:
            await soak.check_round()
            artifact = await soak.api.get("Artifact", name)
            source = references.canonical(daemon_image.reference)
            return (((artifact or {}).get("status") or {}).get("phase") == "Available"
                    and any(source in images for images in soak.recorded_before(
                        1e12).values()))

        await wait_for(recorded_and_available, timeout=90, interval=1.0,
                       description="the DaemonSet's image Available and recorded")
        # the recorded-before rule looks one second back from a deletion
        await asyncio.sleep(1.5)

        async def reported() -> bool:
            await soak.gc_run(timeout=30)
            await soak.check_round()
            return any(v.kind == "artifact_deleted_with_live_owner" for v in report.violations)

        await wait_for(reported, timeout=90, interval=1.0,
                       description="the checker reporting the DaemonSet's Artifact deleted")
    finally:
        soak.stop.set()
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        await soak.close()
    for violation in report.violations:
        print(f"reported: {violation.kind}: {violation.detail}")
    kinds = {v.kind for v in report.violations}
    assert "artifact_deleted_with_live_owner" in kinds
    detail = next(v.detail for v in report.violations
                  if v.kind == "artifact_deleted_with_live_owner")
    assert name in detail and "DaemonSet" in detail
    # the Deployment's image was never touched: the checker names only what broke
    other = references.artifact_name(references.parse(other_image.reference))
    assert all(other not in v.detail for v in report.violations)


SHORT_SEED = 17


@pytest.mark.timeout(720)
async def test_a_short_soak_finds_nothing(tmp_path: Path) -> None:
    """75 s of churn and faults on the HA sandbox, then settle: zero violations."""
    # tags and digest pins of the same images, as the full soak (a pin sharing its manifest
    # with a tag collected first once leaked that tag's manifest: see gc.selecting)
    options = SoakOptions(minutes=1.25, seed=SHORT_SEED, root=tmp_path / "soak",
                          settle_timeout=360)
    report = await run_soak(options)
    result = report.as_dict()
    print(json.dumps(result, indent=2))
    assert result["faults_total"] >= 4
    assert report.violations == [], json.dumps(result["violations"], indent=2)
    assert report.settled
