"""The one runner around every collection of every source kind.

Timing, deadline, error classification, the stale-run guard after reloads, publishing,
self-metrics and the log line all happen here, so no source repeats them.
"""

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from exporter.errors import CollectionError
from exporter.outcomes import publish_failure, publish_success
from exporter.selfmetrics import JOB_FAMILIES, JobStats
from exporter.sources.base import Job, Part, Source
from exporter.state import ERRORS as STATE_ERRORS
from exporter.store import Snapshot, SnapshotStore

log = structlog.get_logger(__name__)


@dataclass
class _Active:
    """A job as currently configured, with the self-metrics of each of its parts."""

    job: Job
    stats: dict[str, JobStats]
    untracked: set[str] = field(default_factory=set)


class Runner:
    """Adds, changes, runs and removes jobs of any source kind."""

    def __init__(
        self, store: SnapshotStore, sources: Mapping[str, Source], full: bool = False
    ) -> None:
        self._store = store
        self.sources = sources
        self.full = full  # every self-metric family, or the basic budget
        self._active: dict[str, _Active] = {}
        store.register([*JOB_FAMILIES, STATE_ERRORS])  # self-metrics any run may publish

    @property
    def stats(self) -> list[JobStats]:
        """Self-metrics of every part of every job."""
        return [s for active in self._active.values() for s in active.stats.values()]

    def jobs(self) -> list[Job]:
        """The jobs as currently configured."""
        return [active.job for active in self._active.values()]

    def add(self, jobs: Sequence[Job]) -> None:
        """Start tracking new jobs; their self-metrics show at once, data after a run."""
        for kind, source in self.sources.items():
            self._store.register(source.families([j for j in jobs if j.kind == kind]), kind)
        for job in jobs:
            source = self.sources[job.kind]
            source.open(job)
            stats = {
                name: JobStats(
                    job.tenant,
                    job.kind,
                    name,
                    reasons=source.reasons,
                    full=self.full,
                    interval=job.interval,
                )
                for name in source.parts(job)
            }
            self._active[job.id] = _Active(job, stats)
            for name, part_stats in stats.items():
                self._store.put(job.key(name), Snapshot(job.tenant, part_stats.render()))

    def set_full(self, full: bool) -> None:
        """Switch every job between the basic and the full self-metrics from its next run."""
        self.full = full
        for stats in self.stats:
            stats.full = full

    def change(self, job: Job) -> None:
        """A job's settings changed: its next run uses them; its totals carry on."""
        active = self._active.get(job.id)
        if active is None:
            self.add([job])
            return
        source = self.sources[job.kind]
        self._store.register(source.families([job]), job.kind)
        source.open(job)
        active.job = job

    def remove(self, job: Job) -> None:
        """Stop tracking a job; its series disappear from the next scrape."""
        active = self._active.pop(job.id, None)
        if active is None:
            return
        self.sources[job.kind].close(active.job)
        for name in (*active.stats, *active.untracked):
            self._store.remove(job.key(name))

    async def run(self, job_id: str) -> None:
        """Collect a job once; every failure is recorded, none is raised."""
        active = self._active.get(job_id)
        if active is None:  # removed by a reload while this run was queued
            return
        job, source = active.job, self.sources[active.job.kind]
        started = time.perf_counter()
        done: set[str] = set()
        try:
            async for part in source.collect(job, time.monotonic() + job.timeout):
                self._publish(active, part, started)
                done.add(part.name)
        except CollectionError as exc:
            self._fail_rest(active, done, exc, started)
        except Exception as exc:
            # A bug must cost one run of one job, not the scheduler's worker.
            log.exception("collection crashed", tenant=job.tenant, source=job.kind, job=job.name)
            error = CollectionError(source.crash_reason, f"internal error: {type(exc).__name__}")
            self._fail_rest(active, done, error, started)

    def _fail_rest(
        self, active: _Active, done: Iterable[str], error: CollectionError, started: float
    ) -> None:
        for name in active.stats.keys() - set(done):
            self._publish(active, Part(name, error=error), started)

    def _publish(self, active: _Active, part: Part, started: float) -> None:
        if self._active.get(active.job.id) is not active:
            return  # a reload removed the job mid-run: publishing would resurrect it
        job = active.job
        key = job.key(part.name)
        if not part.tracked:
            active.untracked.add(part.name)
            self._store.put(key, Snapshot(job.tenant, part.bodies))
            return
        stats = active.stats[part.name]
        duration = part.duration if part.duration is not None else time.perf_counter() - started
        if part.error is not None:
            publish_failure(
                self._store, key, stats, duration=duration, error=part.error, kept=part.bodies
            )
            return
        stats.nulls += part.nulls
        stats.duplicates += part.duplicates
        stats.dropped += part.dropped
        publish_success(
            self._store, key, stats, duration=duration, series=part.series, bodies=part.bodies
        )
