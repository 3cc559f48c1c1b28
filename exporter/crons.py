"""Cron schedules (`schedule: "*/5 * * * *"`, UTC) as APScheduler reads them."""

import datetime as dt

from apscheduler.triggers.cron import CronTrigger

# Firings looked at to find the longest gap: a year of a daily schedule, an hour of a
# per-minute one; enough for the irregular ones (weekdays, month ends) to show their gap.
_FIRINGS = 400


def trigger(expression: str) -> CronTrigger:
    """The trigger of a five-field crontab expression, in UTC; ValueError if it is not one."""
    try:
        return CronTrigger.from_crontab(expression, timezone=dt.UTC)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a crontab expression ({exc})") from None


def longest_gap(expression: str) -> float:
    """Seconds of the longest gap between two firings: what staleness must allow."""
    cron = trigger(expression)
    previous = None
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # a fixed start: the same answer every time
    gaps: list[float] = []
    for _ in range(_FIRINGS):
        fire = cron.get_next_fire_time(previous, now)
        if fire is None:
            break
        if previous is not None:
            gaps.append(float((fire - previous).total_seconds()))
        previous, now = fire, fire + dt.timedelta(microseconds=1)
    if not gaps:
        raise ValueError("the schedule never fires twice")
    return max(gaps)
