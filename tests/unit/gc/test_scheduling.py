"""Cron cadence and threshold decisions, and the settings that feed them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from clusterregistry import config
from clusterregistry.errors import ConfigError
from clusterregistry.gc.scheduling import Schedule


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_next_run_follows_the_cadence_in_utc() -> None:
    daily = Schedule("0 0 * * *")
    assert daily.next_run(_ts("2026-11-26T18:00:00")) == _ts("2026-11-27T00:00:00")
    assert daily.next_run(_ts("2026-11-27T00:00:00")) == _ts("2026-11-28T00:00:00")
    every_15 = Schedule("*/15 * * * *")
    assert every_15.next_run(_ts("2026-11-26T18:07:30")) == _ts("2026-11-26T18:15:00")
    assert Schedule("").next_run(0) is None and not Schedule(" ").enabled


def test_threshold() -> None:
    assert Schedule("0 0 * * *", 0).should_collect(0.0)
    assert not Schedule("0 0 * * *", 80).should_collect(79.9)
    assert Schedule("0 0 * * *", 80).should_collect(80.0)


@pytest.mark.parametrize("cadence", ["every day", "61 * * * *", "* * *"])
def test_invalid_cadence_fails_with_the_key(cadence: str) -> None:
    with pytest.raises(ConfigError, match="clusterRegistryGCCadence"):
        Schedule(cadence)
    with pytest.raises(ConfigError, match="clusterRegistryGCCadence"):
        config.load(env={"CLUSTERREGISTRY_CLUSTERREGISTRY_CLUSTERREGISTRYGCCADENCE": cadence})


@pytest.mark.parametrize("threshold", [-1, 101])
def test_invalid_threshold_fails_with_the_key(threshold: float) -> None:
    with pytest.raises(ConfigError, match="clusterRegistryGCThreshold"):
        Schedule("0 0 * * *", threshold)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("GC_LOCKTTLSECONDS", "0", "gc.lockTtlSeconds"),
    ("GC_GRACEPERIODSECONDS", "-5", "gc.gracePeriodSeconds"),
    ("GC_READONLYMODE", "sometimes", "gc.readOnlyMode"),
    ("GC_SWEEPMODE", "rm -rf", "gc.sweepMode"),
    ("GC_USAGESOURCE", "guess", "gc.usageSource"),
    ("GC_REGISTRYURL", "ftp://x", "gc.registryUrl"),
])
def test_gc_settings_are_validated(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.load(env={f"CLUSTERREGISTRY_{key}": value})


def test_gc_settings_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("gc:\n  gracePeriodSeconds: 60\n  readOnlyMode: follower\n"
                    "clusterRegistry:\n  clusterRegistryGCThreshold: 75\n")
    settings = config.load(path, env={})
    assert settings.gc.grace_period_seconds == 60
    assert settings.gc.read_only_mode == "follower"
    assert settings.cluster_registry.cluster_registry_gc_threshold == 75
