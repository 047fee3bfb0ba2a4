"""Usage measurement and the sweep command (never --delete-untagged), without a registry."""

from __future__ import annotations

import os
from pathlib import Path

from clusterregistry.gc import usage
from clusterregistry.gc.sweeping import (
    garbage_collect_argv,
    parse_summary,
    sweep_job,
)


def test_blob_usage_against_the_configured_size(tmp_path: Path) -> None:
    blobs = tmp_path / usage.BLOBS / "sha256" / "ab" / ("ab" + "0" * 62)
    blobs.mkdir(parents=True)
    (blobs / "data").write_bytes(b"x" * 1000)
    (tmp_path / "docker" / "registry" / "v2" / "repositories").mkdir(parents=True)
    measured = usage.measure(tmp_path, source="auto", configured_bytes=4000)
    assert measured.source == "blobs" and measured.used_bytes == 1000
    assert measured.percent == 25.0


def test_statvfs_usage_of_a_mount_point() -> None:
    measured = usage.measure("/", source="auto", configured_bytes=1)
    assert measured.source == "statvfs"
    stats = os.statvfs("/")
    assert measured.total_bytes == stats.f_blocks * stats.f_frsize
    assert 0 < measured.percent <= 100


def test_the_sweep_never_deletes_untagged() -> None:
    argv = garbage_collect_argv("/usr/bin/docker-registry", "/etc/registry.yml")
    assert argv == ["/usr/bin/docker-registry", "garbage-collect", "/etc/registry.yml"]
    body = sweep_job("abc123", namespace="ns", image="registry:2", volume_claim="pvc",
                     config_map="cm", storage_path="/var/lib/registry", timeout=60,
                     node_name="n1")
    container = body["spec"]["template"]["spec"]["containers"][0]
    assert "--delete-untagged" not in container["command"]
    assert container["command"][1:] == ["garbage-collect", "/etc/docker/registry/config.yml"]
    assert body["spec"]["backoffLimit"] == 0
    assert body["spec"]["template"]["spec"]["nodeName"] == "n1"
    assert body["metadata"]["name"] == "clusterregistry-gc-sweep-abc123"


def test_parse_summary() -> None:
    result = parse_summary("...\n12 blobs marked, 5 blobs and 2 manifests eligible for "
                           "deletion\n", 1.5)
    assert (result.blobs_marked, result.blobs_deleted, result.manifests_deleted) == (12, 5, 2)
