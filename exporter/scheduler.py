"""APScheduler wiring: one interval job per (tenant, query), spread over the interval."""

import datetime as dt
import zlib
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.config import Job

RunJob = Callable[[Job], Awaitable[None]]
SLOT = 1.0


def job_id(job: Job) -> str:
    """Scheduler id of a job."""
    return f"{job.tenant}/{job.query.name}"


def first_run_offset(job: Job) -> float:
    """A stable offset within the interval, so jobs do not all start at once.

    Offsets snap to slots of SLOT seconds: jobs sharing a slot fire on one scheduler
    wake-up, which costs far less CPU than one wake-up per job, while the load is still
    spread over the whole interval.
    """
    fraction = zlib.crc32(job_id(job).encode()) / 2**32
    slots = max(1, int(job.query.interval / SLOT))
    return int(fraction * slots) * job.query.interval / slots


class Scheduler:
    """Runs each job on its interval; never two runs of a job at once; late runs coalesce."""

    def __init__(self, run: RunJob) -> None:
        self._run = run
        self._aps = AsyncIOScheduler(
            # misfire_grace_time=None: a late run still happens (once, coalesced)
            # rather than being skipped when the loop was busy.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=dt.UTC,
        )

    def add(self, job: Job, spread: bool = True) -> None:
        """Schedule `job`; its first run comes after its spread offset."""
        now = dt.datetime.now(dt.UTC)
        offset = first_run_offset(job) if spread else 0.0
        self._aps.add_job(
            self._run,
            IntervalTrigger(seconds=job.query.interval, timezone=dt.UTC),
            args=[job],
            id=job_id(job),
            next_run_time=now + dt.timedelta(seconds=offset),
            replace_existing=True,
        )

    def remove(self, job: Job) -> None:
        """Unschedule `job`; a run in progress finishes."""
        if self._aps.get_job(job_id(job)) is not None:
            self._aps.remove_job(job_id(job))

    def start(self) -> None:
        """Start firing jobs on the running event loop."""
        self._aps.start()

    def shutdown(self) -> None:
        """Stop firing jobs; runs in progress are not awaited here."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
