"""CronJob schedule arithmetic (most recent missed time, next time, time zones)."""

from __future__ import annotations

import datetime as dt

import pytest

from kubesim.controllers.cronjobbing import ScheduleError, most_recent_schedule

UTC = dt.UTC


def cronjob(schedule: str, zone: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"schedule": schedule}
    if zone:
        spec["timeZone"] = zone
    return {"spec": spec}


def at(hour: int, minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, 1, hour, minute, second, tzinfo=UTC)


def test_most_recent_missed_time_and_next() -> None:
    scheduled, following = most_recent_schedule(
        cronjob("*/5 * * * *"), earliest=at(10, 0), at=at(10, 12, 30))
    assert scheduled == at(10, 10)
    assert following == at(10, 15)


def test_nothing_missed_since_earliest() -> None:
    scheduled, following = most_recent_schedule(
        cronjob("*/5 * * * *"), earliest=at(10, 10), at=at(10, 12))
    assert scheduled is None and following == at(10, 15)


def test_exact_schedule_time_counts() -> None:
    scheduled, _ = most_recent_schedule(cronjob("0 * * * *"), earliest=at(9, 30), at=at(10, 0))
    assert scheduled == at(10, 0)


def test_time_zone() -> None:
    # 09:00 in Berlin (UTC+2 in May) is 07:00 UTC
    scheduled, following = most_recent_schedule(
        cronjob("0 9 * * *", "Europe/Berlin"), earliest=at(0, 0), at=at(8, 0))
    assert scheduled == at(7, 0)
    assert following == at(7, 0) + dt.timedelta(days=1)
    prefixed, _ = most_recent_schedule(
        cronjob("CRON_TZ=Europe/Berlin 0 9 * * *"), earliest=at(0, 0), at=at(8, 0))
    assert prefixed == at(7, 0)


def test_macros_and_errors() -> None:
    scheduled, _ = most_recent_schedule(cronjob("@hourly"), earliest=at(9, 0), at=at(10, 30))
    assert scheduled == at(10, 0)
    with pytest.raises(ScheduleError):
        most_recent_schedule(cronjob("not a schedule"), earliest=at(9, 0), at=at(10, 0))
    with pytest.raises(ScheduleError):
        most_recent_schedule(cronjob("* * * * *", "Mars/Olympus"), earliest=at(9, 0),
                             at=at(10, 0))
