"""When GC runs: a cron cadence (croniter) and a storage threshold, decided without I/O.

AOSM's two keys: `clusterRegistryGCCadence` (cron, empty turns scheduled GC off)
and `clusterRegistryGCThreshold` (percent of the registry volume in use; 0 means
every run collects). The settings loader already rejects a bad cadence; this
module checks again so that a caller building a Schedule by hand gets the same
clear ConfigError rather than a croniter traceback at midnight.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from croniter import croniter

from clusterregistry.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    cadence: str
    threshold: float = 0.0

    def __post_init__(self) -> None:
        cadence = self.cadence.strip()
        if cadence and not croniter.is_valid(cadence):
            raise ConfigError(
                f"clusterRegistry.clusterRegistryGCCadence: {cadence!r} is not a cron expression")
        if not 0 <= self.threshold <= 100:
            raise ConfigError(
                f"clusterRegistry.clusterRegistryGCThreshold: {self.threshold} is not a "
                "percentage between 0 and 100")

    @property
    def enabled(self) -> bool:
        return bool(self.cadence.strip())

    def next_run(self, after: float) -> float | None:
        """The first scheduled time strictly after `after` (UTC epoch seconds); None when off."""
        if not self.enabled:
            return None
        start = datetime.fromtimestamp(after, UTC)
        following: datetime = croniter(self.cadence.strip(), start).get_next(datetime)
        return following.timestamp()

    def should_collect(self, usage_percent: float) -> bool:
        """Collect when the threshold is 0 (always) or the usage reached it."""
        return self.threshold <= 0 or usage_percent >= self.threshold
