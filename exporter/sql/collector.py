"""Run a job once: fetch, render, publish the snapshot, record outcome and log one line."""

import asyncio
import time
from collections.abc import Iterable

import structlog

from exporter.config import Job, MetricSpec
from exporter.errors import CollectionError
from exporter.exposition import SCHEDULED_NOTE, Family
from exporter.outcomes import publish_failure, publish_success
from exporter.selfmetrics import JobStats
from exporter.sql.engines import Engines
from exporter.sql.series import SeriesResult, build_series
from exporter.sql.source import Statements, fetch
from exporter.store import Snapshot, SnapshotKey, SnapshotStore

log = structlog.get_logger(__name__)
SOURCE = "sql"


def snapshot_key(job: Job) -> SnapshotKey:
    """Where a SQL job's snapshot lives in the store."""
    return (job.tenant, SOURCE, job.query.name)


def data_family(metric: MetricSpec) -> Family:
    """The exposition family of a configured metric."""
    return Family(metric.name, metric.type, metric.help.rstrip() + SCHEDULED_NOTE)


class SqlCollector:
    """Collects SQL jobs into the snapshot store, one run at a time per job."""

    def __init__(self, store: SnapshotStore, engines: Engines, max_concurrent: int) -> None:
        self._store = store
        self._engines = engines
        self._limit = asyncio.Semaphore(max_concurrent)
        self._statements = Statements()
        self.stats: dict[SnapshotKey, JobStats] = {}

    def add(self, jobs: Iterable[Job]) -> None:
        """Register jobs and publish an initial snapshot so their state is visible at once."""
        jobs = list(jobs)
        self._store.register((data_family(m) for job in jobs for m in job.query.metrics), SOURCE)
        for job in jobs:
            key = snapshot_key(job)
            stats = self.stats.setdefault(key, JobStats(job.tenant, SOURCE, job.query.name))
            if key not in self._store:
                self._store.put(key, Snapshot(job.tenant, stats.render()))

    def remove(self, job: Job) -> None:
        """Forget a job and its series."""
        key = snapshot_key(job)
        self.stats.pop(key, None)
        self._store.remove(key)

    async def run(self, job: Job) -> None:
        """Collect `job` once; failures are recorded, never raised."""
        stats = self.stats.get(snapshot_key(job))
        if stats is None:  # removed by a reload while this run was queued
            return
        started = time.perf_counter()
        try:
            result = await self._collect(job)
        except CollectionError as exc:
            self._failed(job, stats, time.perf_counter() - started, exc)
        except Exception as exc:
            # A bug must cost one run of one job, not the scheduler's worker.
            log.exception("collection crashed", tenant=job.tenant, query=job.query.name)
            error = CollectionError("query", f"internal error: {type(exc).__name__}")
            self._failed(job, stats, time.perf_counter() - started, error)
        else:
            self._succeeded(job, stats, time.perf_counter() - started, result)

    async def _collect(self, job: Job) -> SeriesResult:
        database = self._engines.get(job.database)
        # Wait for the database's own slot first, so a slow database queues its own
        # jobs without holding global slots that other tenants need.
        async with database.slots, self._limit:
            statement = self._statements.get(job.query.sql, database)
            rows = await fetch(database, statement, job.params, job.query.timeout)
        return build_series(
            rows.columns, rows.rows, job.query.metrics, job.tenant, job.query.max_series
        )

    def _current(self, job: Job, stats: JobStats) -> bool:
        """False if a reload removed the job while it ran: publishing would resurrect it."""
        return self.stats.get(snapshot_key(job)) is stats

    def _succeeded(self, job: Job, stats: JobStats, duration: float, result: SeriesResult) -> None:
        if not self._current(job, stats):
            return
        stats.nulls += result.nulls
        stats.duplicates += result.duplicates
        stats.dropped += result.dropped
        bodies = {name: "".join(lines).encode() for name, lines in result.lines.items()}
        publish_success(
            self._store,
            snapshot_key(job),
            stats,
            duration=duration,
            series=result.series,
            bodies=bodies,
            nulls=result.nulls,
        )
        if result.duplicates or result.dropped:
            log.warning(
                "series skipped",
                tenant=job.tenant,
                query=job.query.name,
                duplicates=result.duplicates,
                over_limit=result.dropped,
                max_series=job.query.max_series,
            )

    def _failed(self, job: Job, stats: JobStats, duration: float, exc: CollectionError) -> None:
        if not self._current(job, stats):
            return
        publish_failure(self._store, snapshot_key(job), stats, duration=duration, error=exc)
