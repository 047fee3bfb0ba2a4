"""The sandbox's pure parts: its table of processes, settings it writes, state and clean-up by
recorded pid and start time, access-log pull counting, and the text it prints."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
import yaml

from clusterregistry import config
from clusterregistry_sandbox.hosting import _clear
from clusterregistry_sandbox.narrating import Narrator, table
from clusterregistry_sandbox.scenarios import _human, count_manifest_pulls, network_function
from clusterregistry_sandbox.systems import (
    SERVICES,
    System,
    SystemOptions,
    _proc_start_time,
    alive,
    artifact_crd,
    cleanup_leftovers,
    known_settings,
    read_state,
)
from clusterregistry_sandbox.verifying import _pod_source_images, _template_images


def test_every_service_is_one_row_with_a_distinct_name_and_a_cmd_entry() -> None:
    names = [s.name for s in SERVICES]
    assert len(names) == len(set(names))
    assert {s.entry for s in SERVICES} == {"front", "relay", "tracker", "reconciler", "mirror",
                                           "gc", "webhook"}
    assert [s.name for s in SERVICES if s.entry == "mirror"] == ["mirror-1", "mirror-2"]
    assert [s.name for s in SERVICES if s.entry == "front"] == ["front-1", "front-2"]
    for spec in SERVICES:
        assert spec.path.name == f"{spec.entry}.py"
        assert spec.path.parent.name == "cmd"


def test_known_settings_drops_keys_the_schema_does_not_have() -> None:
    tree = {"localRegistry": "127.0.0.1:5000", "noSuchKey": 1,
            "relay": {"batchSize": 10, "future": True}, "nats": {"servers": ["nats://x:1"]}}
    kept = known_settings(tree)
    assert kept == {"localRegistry": "127.0.0.1:5000", "relay": {"batchSize": 10},
                    "nats": {"servers": ["nats://x:1"]}}


def test_the_settings_file_a_sandbox_writes_is_valid_for_every_process(tmp_path: Path) -> None:
    system = System(tmp_path / "s")
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(system.settings_tree()))
    settings = config.load(path, env={})
    assert settings.enable_cluster_registry
    for spec in SERVICES:
        merged = known_settings({**system.settings_tree(), **system.service_overrides(spec)})
        path.write_text(yaml.safe_dump(merged))
        config.load(path, env={})


def test_by_default_everything_goes_through_one_front(tmp_path: Path) -> None:
    system = System(tmp_path / "s")
    assert [s.name for s in system.service_specs() if s.entry == "front"] == ["front-1"]
    settings = msgspec.convert(system.settings_tree(), config.Settings, strict=False)
    # pods and clients use the front; distribution answers behind it
    assert settings.local_registry == system.front_host() == system.local_registry
    assert settings.local_registry != system.edge.host
    assert settings.registry == settings.registry_endpoint == system.edge.host
    assert settings.mirror.source_through_front
    # GC deletes through distribution itself, sweeps its storage, and the fronts (not a
    # restart of distribution) make the window read-only
    assert settings.gc.registry_url == system.edge.url
    assert settings.gc.storage_path == str(system.edge.root_dir)
    assert settings.gc.read_only_mode == "front"
    front = system.service_overrides(next(s for s in SERVICES if s.name == "front-1"))["front"]
    assert front["port"] == system.front_ports["front-1"]
    assert front["advertiseUrl"] == f"http://{system.front_host()}"
    assert front["host"] == "127.0.0.1"
    assert front["spoolDir"].startswith(str(system.root))
    assert system.front_host() in system._plain_registries()


def test_two_front_replicas_each_on_its_own_port_and_spool(tmp_path: Path) -> None:
    system = System(tmp_path / "s", SystemOptions(front_replicas=2))
    fronts = [s for s in system.service_specs() if s.entry == "front"]
    assert [s.name for s in fronts] == ["front-1", "front-2"]
    one, two = (system.service_overrides(s)["front"] for s in fronts)
    assert one["port"] != two["port"] and one["spoolDir"] != two["spoolDir"]
    assert two["advertiseUrl"] == f"http://127.0.0.1:{two['port']}"
    assert system.local_registry == system.front_host("front-1")


def test_without_the_front_pods_pull_from_distribution_made_read_only_by_restarts(
        tmp_path: Path) -> None:
    system = System(tmp_path / "s", SystemOptions(front=False))
    assert not [s for s in system.service_specs() if s.entry == "front"]
    settings = msgspec.convert(system.settings_tree(), config.Settings, strict=False)
    assert settings.local_registry == system.edge.host == system.local_registry
    assert settings.registry_endpoint == ""
    assert not settings.mirror.source_through_front
    assert settings.gc.read_only_mode == "follower"


def test_webhook_configuration_points_at_the_webhook_with_the_sandbox_ca(tmp_path: Path) -> None:
    system = System(tmp_path / "s", SystemOptions(webhook_failure_policy="Ignore"))
    system.settings_path.parent.mkdir(parents=True)
    system.settings_path.write_text(yaml.safe_dump(system.settings_tree()))
    hook = system.webhook_configuration()["webhooks"][0]
    assert hook["clientConfig"]["url"] == f"https://127.0.0.1:{system.webhook_port}/mutate"
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["clusterregistry"]
    assert hook["matchConditions"][0]["expression"] == config.DEFAULT_MATCH_CONDITION


def test_the_artifact_crd_comes_from_deploy() -> None:
    crd = artifact_crd()
    assert crd is not None, "deploy/kustomize/base has no Artifact CRD"
    assert crd["spec"]["group"] == "clusterregistry.io"
    assert crd["spec"]["scope"] == "Cluster"


def test_alive_tells_a_reused_pid_apart(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = _proc_start_time(child.pid)
        assert started is not None
        assert alive(child.pid, started)
        assert alive(child.pid, None)
        assert not alive(child.pid, started + 1)  # same pid, another process
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid, started)
    assert not alive(None, None)


async def test_cleanup_stops_only_what_the_state_file_recorded(tmp_path: Path) -> None:
    def spawn() -> subprocess.Popen[bytes]:
        # its own session, like the sandbox's processes, and deaf to SIGTERM: SIGKILL must follow
        return subprocess.Popen(
            [sys.executable, "-c",
             "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "time.sleep(60)"],
            start_new_session=True)

    recorded, stranger = spawn(), spawn()
    try:
        await asyncio.sleep(0.2)
        state = {"components": [
            {"name": "kept-by-us", "pid": recorded.pid,
             "started": _proc_start_time(recorded.pid)},
            # the stranger's pid with another start time: a reused pid, never signalled
            {"name": "reused", "pid": stranger.pid,
             "started": (_proc_start_time(stranger.pid) or 0) + 5},
        ]}
        (tmp_path / "state.json").write_text(json.dumps(state))
        stopped = await cleanup_leftovers(tmp_path, grace=0.5)
        assert stopped == ["kept-by-us"]
        assert recorded.wait(timeout=10) == -signal.SIGKILL
        assert stranger.poll() is None
    finally:
        for child in (recorded, stranger):
            child.kill()
            child.wait()


def test_read_state_of_a_missing_or_broken_file(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    (tmp_path / "state.json").write_text("{not json")
    assert read_state(tmp_path) is None


def test_pulls_are_successful_manifest_gets_counted_per_reference() -> None:
    log = "\n".join([
        '127.0.0.1 - - [x] "GET /v2/nf/upf/manifests/1.4.2 HTTP/1.1" 200 512 "" "mirror"',
        '127.0.0.1 - - [x] "HEAD /v2/nf/upf/manifests/1.4.2 HTTP/1.1" 200 0 "" "mirror"',
        '127.0.0.1 - - [x] "GET /v2/nf/upf/manifests/sha256:ab HTTP/1.1" 200 512 "" "mirror"',
        '127.0.0.1 - - [x] "GET /v2/nf/smf/manifests/2.1.0 HTTP/1.1" 401 0 "" "kubelet"',
        '127.0.0.1 - - [x] "GET /v2/nf/upf/blobs/sha256:cd HTTP/1.1" 200 9 "" "mirror"',
        '127.0.0.1 - - [x] "GET /v2/a/b/c/manifests/v1?x=1 HTTP/1.1" 200 9 "" "skopeo"',
    ])
    assert count_manifest_pulls(log) == {"nf/upf:1.4.2": 1, "nf/upf:sha256:ab": 1,
                                         "a/b/c:v1": 1}
    assert count_manifest_pulls(log, method="HEAD") == {"nf/upf:1.4.2": 1}


def test_table_aligns_columns_without_trailing_spaces() -> None:
    text = table(("A", "BB"), [("xxx", 1), ("y", "")])
    assert text.splitlines() == ["A    BB", "xxx  1", "y"]


def test_narrator_writes_plain_lines_to_a_pipe() -> None:
    out = io.StringIO()
    narrator = Narrator(out)
    narrator.line(3.25, "step", style="ok")
    assert out.getvalue() == "    3.2s  step\n"


def test_the_network_function_uses_each_sample_once_with_the_pull_secret() -> None:
    class Fake:
        def __init__(self, ref: str) -> None:
            self.reference = ref

    samples = [Fake(f"127.0.0.1:1/nf/{n}:1") for n in ("a", "b", "c")]
    workloads = network_function(samples)  # type: ignore[arg-type]
    assert [w["kind"] for w in workloads] == ["Deployment", "DaemonSet", "Job"]
    images = [w["spec"]["template"]["spec"]["containers"][0]["image"] for w in workloads]
    assert images == [s.reference for s in samples]
    for workload in workloads:
        spec = workload["spec"]["template"]["spec"]
        assert spec["imagePullSecrets"] == [{"name": "artifact-store"}]
        # Always: every pod start resolves the tag again, so the registry it uses is visible
        assert spec["containers"][0]["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("size,expected", [(0, "0 B"), (1536, "1.5 KiB"),
                                           (5 * 1024 * 1024, "5.0 MiB")])
def test_human_sizes(size: int, expected: str) -> None:
    assert _human(size) == expected


def test_clearing_a_sandbox_dir_removes_only_what_a_sandbox_writes(tmp_path: Path) -> None:
    for name in ("nats", "edge", "logs"):
        (tmp_path / name).mkdir()
    (tmp_path / "logs" / "relay.log").write_text("x")
    (tmp_path / "logs" / "sandbox.log").write_text("the supervisor writes here")
    (tmp_path / "state.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("the user's")
    _clear(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs", "notes.txt"]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["sandbox.log"]


def test_an_owner_uses_its_template_images_and_a_bare_pod_its_originals() -> None:
    template = {"spec": {"template": {"spec": {
        "initContainers": [{"name": "init", "image": "busybox"}],
        "containers": [{"name": "app", "image": "acr.io/nf/upf:1.2"}]}}}}
    assert _template_images(template) == {"docker.io/library/busybox:latest",
                                          "acr.io/nf/upf:1.2"}
    local = "127.0.0.1:5000"
    pod = {
        "metadata": {"annotations": {
            "clusterregistry.io/original-images": json.dumps({"app": "acr.io/nf/upf:1.2"})}},
        "spec": {"containers": [
            {"name": "app", "image": "127.0.0.1:5000/acr.io/nf/upf:1.2"},
            # rewritten without an annotation entry: mapped back from the local name
            {"name": "side", "image": "127.0.0.1:5000/acr.io/nf/smf:2"},
            {"name": "plain", "image": "nginx"},
        ]},
    }
    assert _pod_source_images(pod, local) == {"acr.io/nf/upf:1.2", "acr.io/nf/smf:2",
                                              "docker.io/library/nginx:latest"}


def test_a_flaky_link_is_the_stores_address_for_everything_at_the_edge(tmp_path: Path) -> None:
    from clusterregistry_sandbox.faults import Faults  # noqa: PLC0415

    faults = Faults(cut_after=16 << 20, seed=7, latency=0.05)
    system = System(tmp_path / "s", SystemOptions(flaky_link=faults))
    assert system.flaky_link is not None
    # the mirror (and the fronts, which read its registries) name the store by the link's
    # address; the store itself listens elsewhere, towards which the link forwards
    assert system.store_host == system.flaky_link.host != system.artifact_store.host
    assert system.flaky_link.target_port == system.artifact_store.port
    settings = msgspec.convert(system.settings_tree(), config.Settings, strict=False)
    assert [r.host for r in settings.mirror.registries] == [system.store_host]
    system.write_state("new")
    state = json.loads((system.root / "state.json").read_text())
    assert state["artifact_store"]["host"] == system.store_host
    assert state["artifact_store"]["direct_host"] == system.artifact_store.host
    assert state["flaky_link"] == {"listen": system.store_host,
                                   "store": system.artifact_store.host,
                                   "faults": "cut=16777216,seed=7,latency=50ms"}
    plain = System(tmp_path / "p")
    assert plain.flaky_link is None and plain.store_host == plain.artifact_store.host
