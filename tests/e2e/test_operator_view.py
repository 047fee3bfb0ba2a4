"""What an operator on call sees of a real sandbox (issue 19's "Must show"), through the venv's
kubectl 1.37 and nothing else: `kubectl get events -A` after a mirror, a failed mirror and a GC
run; `kubectl describe artifact`; `kubectl get artifacts -o wide`; and `kubectl clusterregistry
status` healthy, then degraded with NATS stopped (exit 1, the reason naming NATS, answered
within its timeout).

The sandbox runs as it does by default (pods pull through the registry front). Three
Deployments: one of an image pushed to the artifact store for this test (it stays), one of a
second pushed image (deleted, so GC collects its Artifact), one of a tag the artifact store
does not have (its mirror fails; deleted too, so the Failed Artifact goes and the status can
be healthy). Every kubectl output is printed (`-s`) and saved under the test's tmp dir.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from clusterregistry import references
from clusterregistry_sandbox.apiclients import ApiClient, ApiError
from clusterregistry_sandbox.images import ImageFormat
from clusterregistry_sandbox.samples import PushedSample, Sample, fill
from clusterregistry_sandbox.supervising import run_command, wait_for
from clusterregistry_sandbox.systems import NAMESPACE, System
from tests.e2e.conftest import SystemFactory
from tests.world.kube import KUBECTL, Kubectl

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
OPS = "ops"
NATS_TIMEOUT = 2.0
# what the kept image is: a multi-arch index, so PLATFORMS has something to show
KEPT = Sample(repository="ops/kept", tag="1.0.0", image_format=ImageFormat.OCI,
              platforms=("linux/amd64", "linux/arm64"), layer_sizes=(512 * 1024, 128 * 1024),
              description="multi-arch OCI image an operator keeps")
GONE = Sample(repository="ops/gone", tag="1.0.0", image_format=ImageFormat.OCI,
              platforms=("linux/amd64",), layer_sizes=(256 * 1024,),
              description="single-platform OCI image whose workload is deleted")


def _deployment(name: str, image: str) -> dict[str, Any]:
    # no pull secret: the front and the mirror use the artifact store credentials configured
    # for clusterregistry, as in test_node_pulls
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": OPS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image,
                                         "imagePullPolicy": "IfNotPresent"}]},
            },
        },
    }


def _name(reference: str) -> str:
    return references.artifact_name(references.parse(reference))


class Transcript:
    """Each command and its output, printed and kept in a file to be quoted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_text("")

    def add(self, title: str, text: str) -> None:
        block = f"$ {title}\n{text.rstrip()}\n\n"
        print("\n" + block, end="")
        with self.path.open("a") as handle:
            handle.write(block)


async def _phase(api: ApiClient, name: str) -> str | None:
    artifact = await api.get("Artifact", name)
    return None if artifact is None else str((artifact.get("status") or {}).get("phase", ""))


async def _events(api: ApiClient) -> list[dict[str, Any]]:
    return await api.list("Event")


def _reasons(events: list[dict[str, Any]], kind: str, name: str) -> set[str]:
    return {e["reason"] for e in events
            if e["involvedObject"].get("kind") == kind and e["involvedObject"]["name"] == name}


def events_section(describe: str) -> list[list[str]]:
    """The rows of `kubectl describe`'s Events table: Type, Reason, Age, From, Message."""
    _, _, section = describe.partition("\nEvents:\n")
    lines = section.splitlines()[2:]  # the header and its underline
    return [re.split(r"\s{2,}", line.strip(), maxsplit=4) for line in lines if line.strip()]


async def _collect(system: System, api: ApiClient, names: set[str],
                   transcript: Transcript) -> list[dict[str, Any]]:
    """`clusterregistry gc run-once --force` (the running GC does the run) until every Artifact
    of `names` is gone (the owners' deletion must first reach the tracker and the reconciler,
    so a run may find nothing yet); every run's last event."""
    argv = [str(BIN / "clusterregistry"), "gc", "run-once", "--force",
            "--config", str(system.settings_path), "--timeout", "60"]
    runs: list[dict[str, Any]] = []

    async def once() -> bool:
        result = await run_command(argv, timeout=90)
        transcript.add(" ".join(["clusterregistry", *argv[1:]]) + f"   # run {len(runs) + 1}",
                       result.output)
        assert result.ok, result.output
        runs.append(json.loads(result.output.strip().splitlines()[-1]))
        return not [n for n in names if await api.get("Artifact", n) is not None]

    await wait_for(once, timeout=60, interval=0.5, retry_on=(ApiError,),
                   description=f"GC collecting {sorted(names)}")
    return runs


async def _wait_pods(api: ApiClient, app: str, image: PushedSample) -> None:
    async def running() -> bool:
        pods = await api.list("Pod", namespace=OPS, selector=f"app={app}")
        return bool(pods) and all((p.get("status") or {}).get("phase") == "Running"
                                  for p in pods)

    await wait_for(running, timeout=60, interval=0.3, retry_on=(ApiError,),
                   description=f"the {app} pod ({image.reference}) Running")


async def test_what_an_operator_sees_through_kubectl(make_system: SystemFactory,
                                                     tmp_path: Path) -> None:
    # GC collects an Artifact as soon as nothing references it (the sandbox waits 1 s)
    system = await make_system(settings={"gc": {"gracePeriodSeconds": 0.0}})
    assert system.front_on and system.nats is not None
    transcript = Transcript(tmp_path / "operator-view.txt")
    kubectl = Kubectl(system.kubeconfig)
    kept, gone = await fill(system.artifact_store, tmp_path / "images", samples=[KEPT, GONE],
                            seed=1919)
    absent = f"{system.artifact_store.host}/{KEPT.repository}:0.0.0-absent"  # never pushed
    names = {"kept": _name(kept.reference), "gone": _name(gone.reference),
             "absent": _name(absent)}

    async with system.api() as api:
        await api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPS}})
        for workload, image in (("kept", kept.reference), ("gone", gone.reference),
                                ("absent", absent)):
            await api.create(_deployment(workload, image))

        async def mirrored() -> bool:
            phases = {w: await _phase(api, n) for w, n in names.items()}
            assert phases["kept"] != "Failed" and phases["gone"] != "Failed", phases
            return phases == {"kept": "Available", "gone": "Available", "absent": "Failed"}

        await wait_for(mirrored, timeout=60, interval=0.3, retry_on=(ApiError,),
                       description="two images mirrored, the absent tag Failed")
        await _wait_pods(api, "kept", kept)

        # the absent image's and the collected image's owners go; GC frees what they held
        for workload in ("gone", "absent"):
            await api.delete("Deployment", workload, namespace=OPS, propagation="Foreground")

        async def owners_gone() -> bool:
            pods = await api.list("Pod", namespace=OPS)
            return {p["metadata"]["labels"]["app"] for p in pods} == {"kept"}

        await wait_for(owners_gone, timeout=60, interval=0.3, retry_on=(ApiError,),
                       description="the pods of gone and absent deleted")
        runs = await _collect(system, api, {names["gone"], names["absent"]}, transcript)
        assert {run["event"] for run in runs} == {"finished"}, runs
        assert sum(run["bytesFreed"] for run in runs) > 0, runs

        want = {("Artifact", names["kept"]): {"MirrorStarted", "Mirrored"},
                ("Artifact", names["absent"]): {"MirrorFailed"},
                ("Artifact", names["gone"]): {"Mirrored", "Collected"},
                ("Pod", "gc"): {"ReadOnlyWindow", "Collected"}}

        async def recorded() -> bool:
            events = await _events(api)
            return all(reasons <= _reasons(events, kind, name)
                       for (kind, name), reasons in want.items())

        # recorders write in the background (never blocking the work): wait for them
        await wait_for(recorded, timeout=30, interval=0.3, retry_on=(ApiError,),
                       description=f"the events {want}")

    # kubectl get events -A: the mirror, the failed mirror and the GC run
    listed = (await kubectl.run("get", "events", "-A")).stdout
    transcript.add("kubectl get events -A", listed)
    header, *lines = listed.splitlines()
    assert header.split() == ["NAMESPACE", "LAST", "SEEN", "TYPE", "REASON", "OBJECT",
                              "MESSAGE"], header
    seen = {tuple(line.split()[i] for i in (0, 2, 3, 4)) for line in lines}
    for row in [("default", "Normal", "MirrorStarted", f"artifact/{names['kept']}"),
                ("default", "Normal", "Mirrored", f"artifact/{names['kept']}"),
                ("default", "Warning", "MirrorFailed", f"artifact/{names['absent']}"),
                ("default", "Normal", "Collected", f"artifact/{names['gone']}"),
                (NAMESPACE, "Normal", "ReadOnlyWindow", "pod/gc"),
                (NAMESPACE, "Normal", "Collected", "pod/gc")]:
        assert row in seen, (row, listed)

    # kubectl describe artifact: spec, status, conditions, and its own events
    described = (await kubectl.run("describe", "artifact", names["kept"])).stdout
    transcript.add(f"kubectl describe artifact {names['kept']}", described)
    assert f"Name:         {names['kept']}" in described
    for section in ("\nSpec:\n", "\nStatus:\n", "  Conditions:\n", "\nEvents:\n"):
        assert section in described, (section, described)
    assert f"Source Artifact:  {kept.reference}" in described
    assert re.search(r"\n  Phase:\s+Available\n", described), described
    rows = {row[1]: row for row in events_section(described)}
    assert {"MirrorStarted", "Mirrored"} <= set(rows), rows
    assert rows["Mirrored"][0] == "Normal"
    assert rows["Mirrored"][3] == "clusterregistry-reconciler"
    assert kept.digest in rows["Mirrored"][4]
    assert not {"MirrorFailed", "Collected"} & set(rows), rows  # others' events stay theirs

    # kubectl get artifacts -o wide: a human SIZE, DIGEST, PLATFORMS, LAST-USED
    wide = (await kubectl.run("get", "artifacts", "-o", "wide")).stdout
    transcript.add("kubectl get artifacts -o wide", wide)
    header, *lines = wide.splitlines()
    columns = header.split()
    assert columns[:6] == ["NAME", "SOURCE", "PHASE", "SIZE", "REFS", "AGE"], header
    assert {"DIGEST", "PLATFORMS", "LAST-USED"} <= set(columns), header
    [line] = [line for line in lines if line.split()[0] == names["kept"]]
    # cut where each header starts: PROGRESS is empty once a copy has ended
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    cells = {name: line[start:end].strip() for name, start, end in zip(
        columns, starts, [*starts[1:], None], strict=True)}
    assert cells["PROGRESS"] == "", cells
    assert cells["PHASE"] == "Available" and cells["REFS"] == "1", cells
    assert re.fullmatch(r"\d+(\.\d+)?(Ki|Mi|Gi)", cells["SIZE"]), cells
    assert kept.digest.startswith(cells["DIGEST"]) and cells["DIGEST"] != kept.digest, cells
    assert cells["PLATFORMS"] == "linux/amd64,linux/arm64", cells
    assert cells["LAST-USED"] != "<none>", cells
    assert not any(names[w] in wide for w in ("gone", "absent")), wide

    # kubectl clusterregistry status: the plugin on PATH, healthy, then NATS stopped
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "KUBECONFIG": str(system.kubeconfig), "HOME": str(tmp_path)}
    status = [KUBECTL, "clusterregistry", "status", "--sandbox", str(system.root)]
    # healthy: every source answers; a generous timeout, so a loaded machine is not "degraded"
    began = time.monotonic()
    healthy = await run_command([*status, "--timeout", "10"], env=env, timeout=60)
    took = time.monotonic() - began
    transcript.add(f"kubectl clusterregistry status --sandbox {system.root} --timeout 10   "
                   f"# exit {healthy.returncode}, {took:.2f}s", healthy.output)
    assert healthy.returncode == 0, healthy.output
    assert healthy.output.startswith("clusterregistry: healthy"), healthy.output

    await system.nats.stop()
    system.write_state()
    began = time.monotonic()
    degraded = await run_command([*status, "--timeout", f"nats={NATS_TIMEOUT:g}"], env=env,
                                 timeout=60)
    took = time.monotonic() - began
    transcript.add(f"kubectl clusterregistry status --sandbox {system.root} --timeout "
                   f"nats={NATS_TIMEOUT:g}   # exit {degraded.returncode}, {took:.2f}s",
                   degraded.output)
    assert degraded.returncode == 1, degraded.output
    assert degraded.output.startswith("clusterregistry: DEGRADED"), degraded.output
    reasons = [line for line in degraded.output.splitlines() if line.startswith("  - ")]
    assert any(r.startswith(f"  - NATS unreachable ({system.nats.url})") for r in reasons), (
        degraded.output)
    # generous: two interpreters start (kubectl's plugin, then Python) beside the NATS timeout
    assert took < 4 * NATS_TIMEOUT + 5, took
    print(f"transcript: {transcript.path}")

