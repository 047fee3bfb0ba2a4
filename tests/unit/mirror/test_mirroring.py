"""The worker's decisions from outcomes alone, its results, and the mirror's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterregistry import config
from clusterregistry.config import MirrorSettings
from clusterregistry.errors import (
    AuthenticationError,
    ConfigError,
    DigestMismatchError,
    FenceHeldError,
    ManifestUnknownError,
    NotFoundError,
    RegistryError,
    UnsupportedManifestError,
)
from clusterregistry.mirror.mirroring import (
    Running,
    in_flight_bytes,
    progress_message,
    reason_of,
    result_for,
    settle,
)
from clusterregistry.oci.copying import CopyReport
from clusterregistry.schemas import MirrorRequest

SETTINGS = MirrorSettings(max_deliveries=3, retry_delay_seconds=2.0)


@pytest.mark.parametrize(("error", "reason"), [
    (DigestMismatchError("x"), "digest_mismatch"),
    (AuthenticationError("x"), "authentication"),
    (ManifestUnknownError("x"), "manifest_unknown"),
    (UnsupportedManifestError("x"), "unsupported_manifest"),
    (NotFoundError("secret ns/x does not exist"), "secret"),
    (RegistryError("x"), "unavailable"),
    (FenceHeldError("x"), "fence_held"),
    (ValueError("bug"), "internal"),
])
def test_reasons_are_a_small_fixed_set(error: BaseException, reason: str) -> None:
    assert reason_of(error) == reason


def test_success_is_acked_and_reported() -> None:
    assert settle(None, delivered=1, settings=SETTINGS) == settle(None, delivered=9,
                                                                   settings=SETTINGS)
    outcome = settle(None, delivered=1, settings=SETTINGS)
    assert (outcome.action, outcome.report) == ("ack", True)


def test_permanent_failures_end_at_once_and_are_reported_as_final() -> None:
    outcome = settle(DigestMismatchError("bad"), delivered=1, settings=SETTINGS)
    assert (outcome.action, outcome.report, outcome.retryable) == ("term", True, False)


def test_retryable_failures_back_off_then_end_reported_as_retryable() -> None:
    first = settle(RegistryError("503"), delivered=1, settings=SETTINGS)
    second = settle(RegistryError("503"), delivered=2, settings=SETTINGS)
    assert (first.action, first.delay, first.report) == ("nak", 2.0, False)
    assert (second.action, second.delay) == ("nak", 4.0)
    hinted = settle(RegistryError("429", delay=30.0), delivered=1, settings=SETTINGS)
    assert hinted.delay == 30.0  # Retry-After wins over a shorter back-off
    last = settle(RegistryError("503"), delivered=3, settings=SETTINGS)
    assert (last.action, last.report, last.retryable) == ("term", True, True)
    assert settle(ValueError("bug"), delivered=1, settings=SETTINGS).action == "nak"


def test_a_held_fence_is_never_final() -> None:
    outcome = settle(FenceHeldError("gc", delay=4.0), delivered=50, settings=SETTINGS)
    assert (outcome.action, outcome.delay, outcome.report) == ("nak", 4.0, False)


def test_results_carry_the_copy_or_the_error() -> None:
    request = MirrorRequest(artifact="a", generation=3, source="s.io/x:1",
                            destination="l:5000/s.io/x:1", attempt=2, trace_id="t")
    report = CopyReport(digest="sha256:" + "a" * 64, size=10, platforms=["linux/amd64"],
                        bytes_copied=7, blobs_copied=2, blobs_mounted=1, blobs_skipped=1)
    ok = result_for(request, report=report, error=None,
                    settlement=settle(None, delivered=1, settings=SETTINGS), worker="w",
                    duration=1.23456)
    assert (ok.ok, ok.digest, ok.blobs_mounted, ok.attempt, ok.trace_id, ok.worker) == (
        True, report.digest, 1, 2, "t", "w")
    assert ok.duration_seconds == 1.235
    error = AuthenticationError("registry s.io refused user 'robot'")
    failed = result_for(request, report=None, error=error,
                        settlement=settle(error, delivered=1, settings=SETTINGS), worker="w",
                        duration=0.5)
    assert (failed.ok, failed.reason, failed.retryable) == (False, "authentication", False)
    assert "refused user 'robot'" in failed.error


@pytest.mark.parametrize(("env", "message"), [
    ({"CLUSTERREGISTRY_MIRROR_CONCURRENCY": "0"}, "mirror.concurrency"),
    ({"CLUSTERREGISTRY_MIRROR_CHUNKSIZE": "lots"}, "mirror.chunkSize"),
    ({"CLUSTERREGISTRY_MIRROR_PLATFORMS": "linux"}, "mirror.platforms"),
    ({"CLUSTERREGISTRY_MIRROR_ACKWAITSECONDS": "0.5"}, "mirror.ackWaitSeconds"),
    ({"CLUSTERREGISTRY_MIRROR_PROGRESSINTERVALSECONDS": "0.1"},
     "mirror.progressIntervalSeconds"),
])
def test_bad_mirror_settings_name_the_key(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(env=env)


def test_registry_access_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("mirror:\n  registries:\n    - host: acr.io\n      password: x\n")
    with pytest.raises(ConfigError, match=r"mirror.registries\[0\].username"):
        config.load(path, env={})
    path.write_text("mirror:\n  platforms: [linux/arm64]\n  registries:\n"
                    "    - {host: acr.io, username: u, passwordFile: /run/p, caFile: /ca.pem}\n")
    settings = config.load(path, env={})
    assert settings.mirror.platforms == ["linux/arm64"]
    assert settings.mirror.registries[0].password_file == "/run/p"


def test_progress_is_published_once_the_total_is_known_and_only_when_it_moved() -> None:
    request = MirrorRequest(artifact="upf", generation=7, source="acr.io/nf/upf:1",
                            destination="edge:5000/acr.io/nf/upf:1", attempt=2)
    running = Running(request)
    assert progress_message(running, worker="m-0", now=100.0) is None  # manifests not read
    running.progress.planned(3, 8 << 20)
    first = progress_message(running, worker="m-0", now=100.0)
    assert first is not None
    assert (first.artifact, first.generation, first.attempt, first.worker, first.time) == (
        "upf", 7, 2, "m-0", 100.0)
    assert (first.bytes_done, first.bytes_total, first.blobs_done, first.blobs_total) == (
        0, 8 << 20, 0, 3)
    running.sent = (first.bytes_done, first.bytes_total)
    assert progress_message(running, worker="m-0", now=102.0) is None  # throttled: nothing new
    running.progress.advanced(1 << 20)
    moved = progress_message(running, worker="m-0", now=104.0)
    assert moved is not None and moved.bytes_done == 1 << 20


def test_in_flight_bytes_sum_the_copies_whose_totals_are_known() -> None:
    request = MirrorRequest(artifact="a", generation=1, source="s:1", destination="d:1")
    one, two, unplanned = Running(request), Running(request), Running(request)
    one.progress.planned(2, 100)
    one.progress.advanced(30)
    two.progress.planned(1, 50)
    two.progress.blob_done("sha256:b", "skipped", 50)
    unplanned.progress.advanced(5)
    assert in_flight_bytes([one, two, unplanned]) == (80, 70)
    assert in_flight_bytes([]) == (0, 0)
