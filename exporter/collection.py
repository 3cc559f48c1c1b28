"""Collection in the background: jobs scheduled, reconciled on reload, waited for at shutdown."""

import asyncio
from collections.abc import Sequence
from functools import partial
from typing import Any

import structlog

from exporter.readiness import Readiness
from exporter.reconcile import Diff, diff
from exporter.scheduler import Scheduler
from exporter.sources.base import Job
from exporter.sources.runner import Runner

log = structlog.get_logger(__name__)


class Collection:
    """Keeps the scheduler, the runner and readiness in step with a set of jobs."""

    def __init__(self, runner: Runner, readiness: Readiness) -> None:
        self.runner = runner
        self.readiness = readiness
        self.scheduler = Scheduler()
        self._inflight: set[asyncio.Task[Any]] = set()

    async def add(self, jobs: Sequence[Job]) -> None:
        """Track and schedule new jobs; readiness waits for their first run."""
        await self.runner.add(jobs)
        self.readiness.expect(job.id for job in jobs)
        for job in jobs:
            self._schedule(job)

    async def apply(self, jobs: Sequence[Job]) -> Diff[Job]:
        """Switch to `jobs`: start new ones, stop removed ones, re-plan changed ones."""
        changes = diff({j.id: j for j in self.runner.jobs()}, {j.id: j for j in jobs})
        for job in changes.removed:
            self.scheduler.remove(job.id)
            self.runner.remove(job)
            self.readiness.forget(job.id)
        await self.add(changes.added)
        for job in changes.changed:
            await self.runner.change(job)
            self._schedule(job)
        for kind, source in self.runner.sources.items():
            await source.retain([j for j in jobs if j.kind == kind])
        return changes

    def _schedule(self, job: Job) -> None:
        self.scheduler.add(job.id, job.interval, partial(self.run, job.id), cron=job.cron)

    async def run(self, job_id: str) -> None:
        """Collect one job now (the scheduler calls this; tests may too)."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)  # shutdown gives it the grace period
        try:
            await self.runner.run(job_id)
        finally:
            if task is not None:
                self._inflight.discard(task)
        self.readiness.done(job_id)

    async def stop(self, grace: float) -> None:
        """No new runs; running ones get `grace` seconds, then are cancelled."""
        # Pause, not shut down: APScheduler's shutdown cancels the runs in progress, and
        # those get the grace period first.
        self.scheduler.pause()
        if self._inflight:
            _, late = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("runs cancelled at shutdown", runs=len(late), grace_seconds=grace)
                await asyncio.wait(late, timeout=1.0)
        self.scheduler.shutdown()
        await self.runner.flush()
        for source in self.runner.sources.values():
            await source.aclose()
