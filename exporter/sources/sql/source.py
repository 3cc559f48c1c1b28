"""The SQL source: each (tenant, query) is a job; a run is one query on the tenant's database."""

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence

import structlog

from exporter.config import Config, MetricSpec, QueryJob
from exporter.errors import REASONS
from exporter.exposition import SCHEDULED_NOTE, Family
from exporter.sources.base import Job, Part, Resources
from exporter.sources.sql.fetch import Rows, Statement, Statements, fetch, fetch_pipelined
from exporter.sources.sql.pipeline import BATCHABLE_UNDER, Pipeline
from exporter.sources.sql.series import build_series
from exporter.sources.sql.servers import Servers

log = structlog.get_logger(__name__)
KIND = "sql"


def data_family(metric: MetricSpec) -> Family:
    """The exposition family of a configured metric."""
    return Family(metric.name, metric.type, metric.help.rstrip() + SCHEDULED_NOTE)


def jobs(config: Config) -> list[Job]:
    """One job per (tenant, query) of the config."""
    return [
        Job(
            q.tenant,
            KIND,
            q.query.name,
            q.query.interval,
            q.query.timeout,
            q,
            q.database.display,
            q.query.stale_after,
        )
        for q in config.jobs
    ]


class SqlSource:
    """Runs configured queries; connections are shared per database server."""

    kind = KIND
    reasons: tuple[str, ...] = REASONS
    crash_reason = "query"
    skips_rows = True

    def __init__(self, resources: Resources) -> None:
        self.engines = Servers()
        self._limit = asyncio.Semaphore(resources.max_concurrent_queries)
        self._statements = Statements()
        self._quick: set[str] = set()  # jobs whose last statement finished within a batch's bound

    def families(self, jobs: Sequence[Job]) -> Iterable[Family]:
        """The configured metrics of these queries."""
        return [data_family(m) for job in jobs for m in _spec(job).query.metrics]

    def parts(self, job: Job) -> tuple[str, ...]:
        """A query's one part is the query itself."""
        return (job.name,)

    def open(self, job: Job) -> None:
        """Nothing to prepare: connections open on first use."""

    def close(self, job: Job) -> None:
        """Forget the job's timing; connections are shared and retained by `retain`."""
        self._quick.discard(job.id)

    async def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """Run the query and render its rows (the runner enforces nothing else)."""
        spec = _spec(job)
        server, pipeline = self.engines.get(spec.database)
        # Wait for the server's own slot first, so a slow server queues its own
        # jobs without holding global slots that other servers' tenants need.
        async with server.slots, self._limit:
            statement = self._statements.get(spec.query.sql, server)
            if pipeline is not None:
                rows = await self._pipelined(job, pipeline, statement, spec.database.database)
            else:
                rows = await fetch(server, statement, spec.params, spec.query.timeout)
        query = spec.query
        result = build_series(rows.columns, rows.rows, query.metrics, job.tenant, query.max_series)
        if result.duplicates or result.dropped:
            log.warning(
                "series skipped", tenant=job.tenant, query=job.name,
                duplicates=result.duplicates, over_limit=result.dropped,
                max_series=query.max_series,
            )  # fmt: skip
        yield result.part(job.name)

    async def _pipelined(
        self, job: Job, pipeline: Pipeline, statement: Statement, database: str | None
    ) -> Rows:
        """Through the server's pipeline; a job shares batches once it has proved quick."""
        spec = _spec(job)
        alone = job.id not in self._quick
        self._quick.discard(job.id)  # until this run proves quick again
        rows, elapsed = await fetch_pipelined(
            pipeline, database, statement, spec.params, spec.query.timeout, alone=alone
        )
        if elapsed is not None and elapsed < BATCHABLE_UNDER:
            self._quick.add(job.id)
        return rows

    async def retain(self, jobs: Sequence[Job]) -> None:
        """Close pools no query uses any more (a changed password makes a new pool)."""
        await self.engines.retain({_spec(job).database.pool_key for job in jobs})

    async def aclose(self) -> None:
        """Close every pool."""
        await self.engines.close()


def _spec(job: Job) -> QueryJob:
    spec: QueryJob = job.spec
    return spec
