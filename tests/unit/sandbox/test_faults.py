"""`--flaky-link`'s text: what each key means, and the mistakes it refuses."""

from __future__ import annotations

import pytest

from clusterregistry_sandbox.commands import FLAKY_LINK_HELP
from clusterregistry_sandbox.faults import Faults, parse_faults

Mi = 1 << 20


def test_the_example_of_the_help_text() -> None:
    assert "cut=16Mi,seed=7,latency=50ms,rate=10Mi" in FLAKY_LINK_HELP
    assert parse_faults("cut=16Mi,seed=7,latency=50ms,rate=10Mi") == Faults(
        cut_after=16 * Mi, seed=7, latency=0.05, rate=10 * Mi)


@pytest.mark.parametrize(("text", "faults"), [
    ("", Faults()),
    ("cut=1000", Faults(cut_after=1000)),
    ("cut=1.5M", Faults(cut_after=1_500_000)),
    ("cut=64Ki, direction=up", Faults(cut_after=65536, direction="up")),
    ("cut=2k,direction=both", Faults(cut_after=2000, direction="both")),
    ("latency=0.2s", Faults(latency=0.2)),
    ("latency=2", Faults(latency=2.0)),
    ("rate=1Gi/s", Faults(rate=1 << 30)),
    ("rate=500kB", Faults(rate=500_000)),
])
def test_keys_and_units(text: str, faults: Faults) -> None:
    assert parse_faults(text) == faults
    assert parse_faults(faults.describe() if faults != Faults() else "") == faults


@pytest.mark.parametrize(("text", "says"), [
    ("cut", "KEY=VALUE"),
    ("cut=lots", "a size"),
    ("cut=0", "at least 1"),
    ("latency=fast", "a duration"),
    ("seed=7", "needs cut"),
    ("direction=up", "needs cut"),
    ("cut=1k,direction=sideways", "down, up or both"),
    ("cut=1k,cut=2k", "given twice"),
    ("drop=1%", "unknown"),
    ("cut=1k,seed=x", "an integer"),
])
def test_mistakes_are_refused_with_a_reason(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_faults(text)
