"""The SQL source: each (tenant, query) is a job; a run is one query on the tenant's database."""

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import structlog

from exporter.config import Config, MetricSpec, QueryJob
from exporter.errors import REASONS, CollectionError
from exporter.exposition import SCHEDULED_NOTE, Family
from exporter.sources.base import Job, OnePart, Part, Resources
from exporter.sources.sql.engines import Server
from exporter.sources.sql.fetch import Rows, Statement, Statements, fetch, fetch_pipelined
from exporter.sources.sql.pipeline import BATCHABLE_UNDER, Pipeline
from exporter.sources.sql.series import build_series
from exporter.sources.sql.servers import Servers
from exporter.sources.sql.totals import Totals

log = structlog.get_logger(__name__)
KIND = "sql"


def data_family(metric: MetricSpec) -> Family:
    """The exposition family of a configured metric."""
    kind = "stateset" if metric.type == "enum" else metric.type
    return Family(metric.name, kind, metric.help.rstrip() + SCHEDULED_NOTE)


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
            q.query.schedule,
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
        self._state = resources.state
        self._totals: dict[str, Totals] = {}  # per job with accumulating metrics, once loaded
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
        """Forget the job's timing and totals; connections are shared and kept by `retain`."""
        self._quick.discard(job.id)
        self._totals.pop(job.id, None)

    def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """Run the query and render its rows (the runner enforces nothing else)."""
        return OnePart(self._run(job, deadline))

    async def _run(self, job: Job, deadline: float) -> Part:
        spec = _spec(job)
        server, pipeline = self.engines.get(spec.database)
        # Wait for the server's own slot first, so a slow server queues its own
        # jobs without holding global slots that other servers' tenants need.
        async with server.slots, self._limit:
            columns, found = await self._fetch_all(job, server, pipeline, deadline)
        query = spec.query
        if len(found) < query.min_rows:
            message = f"{len(found)} row(s), min_rows is {query.min_rows}"
            raise CollectionError("too_few_rows", message)
        totals = None
        if any(m.accumulates for m in query.metrics):
            # On a copy: a run that fails half-way adds nothing.
            totals = copy.deepcopy(await self._load(job))
        result = build_series(
            columns, found, query.metrics, job.tenant, query.max_series, totals=totals,
            labels=spec.labels,
        )  # fmt: skip
        if totals is not None:
            # Before publishing: a crash now replays nothing, and no total seen goes down.
            await self._state.save(job.id, totals.to_state())
            self._totals[job.id] = totals
        if result.duplicates or result.dropped:
            log.warning(
                "series skipped", tenant=job.tenant, query=job.name,
                duplicates=result.duplicates, over_limit=result.dropped,
                max_series=query.max_series,
            )  # fmt: skip
        return result.part(job.name)

    async def _fetch_all(
        self, job: Job, server: Server, pipeline: Pipeline | None, deadline: float
    ) -> tuple[list[str], list[Sequence[object]]]:
        """Every row of the query, once per parameter set, all within the query's timeout."""
        spec = _spec(job)
        statement = self._statements.get(spec.query.sql, server)
        columns: list[str] = []
        found: list[Sequence[object]] = []
        for params in _parameter_sets(spec):
            seconds = min(spec.query.timeout, max(0.001, deadline - time.monotonic()))
            if pipeline is not None:
                rows = await self._pipelined(job, pipeline, statement, params, seconds)
            else:
                rows = await fetch(server, statement, params, seconds)
            columns = columns or rows.columns
            found.extend(rows.rows)
        return columns, found

    async def _pipelined(
        self,
        job: Job,
        pipeline: Pipeline,
        statement: Statement,
        params: Mapping[str, object],
        seconds: float,
    ) -> Rows:
        """Through the server's pipeline; a job shares batches once it has proved quick."""
        spec = _spec(job)
        alone = job.id not in self._quick
        self._quick.discard(job.id)  # until this run proves quick again
        rows, elapsed = await fetch_pipelined(
            pipeline, spec.database.database, statement, params, seconds, alone=alone
        )
        if elapsed is not None and elapsed < BATCHABLE_UNDER:
            self._quick.add(job.id)
        return rows

    async def _load(self, job: Job) -> Totals:
        """The job's totals: kept in memory, read from the state store on first use."""
        totals = self._totals.get(job.id)
        if totals is not None:
            return totals
        metrics = _spec(job).query.metrics
        bounds = {m.name: m.buckets for m in metrics if m.type in ("histogram", "summary")}
        saved = await self._state.load(job.id)
        totals = Totals()
        if saved is not None:
            try:
                totals = Totals.restore(saved, bounds)
            except (KeyError, TypeError, ValueError, AttributeError):
                self._state.corrupt(job.id)
        self._totals[job.id] = totals
        return totals

    async def retain(self, jobs: Sequence[Job]) -> None:
        """Close pools no query uses any more (a changed password makes a new pool)."""
        await self.engines.retain({_spec(job).database.pool_key for job in jobs})

    async def aclose(self) -> None:
        """Close every pool."""
        await self.engines.close()


def _parameter_sets(spec: QueryJob) -> list[Mapping[str, object]]:
    """The tenant's params, once per set of the query's `parameters` (over them)."""
    if not spec.query.parameters:
        return [spec.params]
    return [{**spec.params, **dict(values)} for values in spec.query.parameters]


def _spec(job: Job) -> QueryJob:
    spec: QueryJob = job.spec
    return spec
