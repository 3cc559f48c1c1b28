"""APScheduler wiring: one interval job per (tenant, query), spread over the interval."""

import datetime as dt
import zlib
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

RunJob = Callable[[], Awaitable[None]]
SLOT = 1.0


def first_run_offset(job_id: str, interval: float) -> float:
    """A stable offset within the interval, so jobs do not all start at once.

    Offsets snap to slots of SLOT seconds: jobs sharing a slot fire on one scheduler
    wake-up, which costs far less CPU than one wake-up per job, while the load is still
    spread over the whole interval.
    """
    fraction = zlib.crc32(job_id.encode()) / 2**32
    slots = max(1, int(interval / SLOT))
    return int(fraction * slots) * interval / slots


class Scheduler:
    """Runs each job on its interval; never two runs of a job at once; late runs coalesce."""

    def __init__(self) -> None:
        self._aps = AsyncIOScheduler(
            # misfire_grace_time=None: a late run still happens (once, coalesced)
            # rather than being skipped when the loop was busy.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=dt.UTC,
        )

    def add(self, job_id: str, interval: float, run: RunJob, spread: bool = True) -> None:
        """Schedule `run` every `interval`; its first run comes after its spread offset."""
        now = dt.datetime.now(dt.UTC)
        offset = first_run_offset(job_id, interval) if spread else 0.0
        self._aps.add_job(
            run,
            IntervalTrigger(seconds=interval, timezone=dt.UTC),
            id=job_id,
            next_run_time=now + dt.timedelta(seconds=offset),
            replace_existing=True,
        )

    def remove(self, job_id: str) -> None:
        """Unschedule a job; a run in progress finishes."""
        if self._aps.get_job(job_id) is not None:
            self._aps.remove_job(job_id)

    def start(self) -> None:
        """Start firing jobs on the running event loop."""
        self._aps.start()

    def pause(self) -> None:
        """Start no new runs; runs in progress go on."""
        if self._aps.running:
            self._aps.pause()

    def shutdown(self) -> None:
        """Stop the scheduler; APScheduler cancels runs still in progress."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
