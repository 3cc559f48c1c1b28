"""APScheduler wiring: jobs spread over their interval in slots, one APScheduler job per slot."""

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from exporter import crons

RunJob = Callable[[], Awaitable[None]]
SLOT = 1.0


def first_run_offset(job_id: str, interval: float) -> float:
    """A stable offset within the interval, so jobs do not all start at once.

    Offsets snap to slots of SLOT seconds: jobs sharing a slot fire on one scheduler
    wake-up, which costs far less CPU than one wake-up per job, while the load is still
    spread over the whole interval.
    """
    # blake2b, not crc32: CRC's high bits barely change between ids like t1/q and t2/q, which
    # put whole fleets of similar ids into a few slots.
    digest = hashlib.blake2b(job_id.encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2**64
    slots = max(1, int(interval / SLOT))
    return int(fraction * slots) * interval / slots


class Scheduler:
    """Runs each job on its interval; never two runs of a job at once; late runs coalesce.

    Jobs whose (interval, offset) slot is the same share one APScheduler job that starts
    them all: APScheduler's bookkeeping per firing (run times, job store, events) then costs
    once per slot instead of once per job, which at thousands of jobs was a large share of
    the CPU per run.
    """

    def __init__(self) -> None:
        self._aps = AsyncIOScheduler(
            # misfire_grace_time=None: a late slot still fires (once, coalesced) rather than
            # being skipped when the loop was busy.
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=dt.UTC,
        )
        # Slot id ("slot/<interval>/<offset>" or "cron/<expression>") -> its jobs.
        self._slots: dict[str, dict[str, RunJob]] = {}
        self._slot_of: dict[str, str] = {}
        # Job id -> its run in progress. Taken out by the run itself, not by a done callback:
        # that callback was a loop turn of its own for each of thousands of runs.
        self._running: dict[str, asyncio.Task[None]] = {}

    def add(
        self,
        job_id: str,
        interval: float,
        run: RunJob,
        spread: bool = True,
        cron: str | None = None,
    ) -> None:
        """Schedule `run` every `interval` (first after its spread offset), or on `cron`."""
        self.remove(job_id)
        if cron is not None:
            slot = f"cron/{cron}"
            trigger: BaseTrigger = crons.trigger(cron)
            first = None  # the trigger's own next firing
        else:
            offset = first_run_offset(job_id, interval) if spread else 0.0
            slot = f"slot/{interval:g}/{offset:g}"
            trigger = IntervalTrigger(seconds=interval, timezone=dt.UTC)
            first = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = {}
            options = {} if first is None else {"next_run_time": first}
            self._aps.add_job(self._fire, trigger, args=[slot], id=slot, **options)
        members[job_id] = run
        self._slot_of[job_id] = slot

    async def _fire(self, slot: str) -> None:
        loop = asyncio.get_running_loop()
        for job_id, run in list(self._slots.get(slot, {}).items()):
            running = self._running.get(job_id)
            if running is not None and not running.done():
                continue  # still running since its last turn: this one coalesces into it
            # (A task cancelled before it started never ran its `finally`: done, not running.)
            self._running[job_id] = loop.create_task(self._run(job_id, run))

    async def _run(self, job_id: str, run: RunJob) -> None:
        try:
            await run()
        finally:
            self._running.pop(job_id, None)

    def next_run(self, job_id: str) -> dt.datetime | None:
        """When the job's slot fires next (None if not scheduled or not started)."""
        slot = self._slot_of.get(job_id)
        job = self._aps.get_job(slot) if slot is not None else None
        return job.next_run_time if job is not None else None

    def remove(self, job_id: str) -> None:
        """Unschedule a job; a run in progress finishes."""
        slot = self._slot_of.pop(job_id, None)
        if slot is None:
            return
        members = self._slots[slot]
        members.pop(job_id, None)
        if not members:
            del self._slots[slot]
            if self._aps.get_job(slot) is not None:
                self._aps.remove_job(slot)

    def start(self) -> None:
        """Start firing jobs on the running event loop."""
        self._aps.start()

    def pause(self) -> None:
        """Start no new runs; runs in progress go on."""
        if self._aps.running:
            self._aps.pause()

    def shutdown(self) -> None:
        """Stop the scheduler and cancel runs still in progress."""
        if self._aps.running:
            self._aps.shutdown(wait=False)
        for task in list(self._running.values()):
            task.cancel()
