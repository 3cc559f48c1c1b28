"""The SQL source: each (tenant, query) is a job; a run is one query on the tenant's database."""

import copy
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence

import pymysql
import structlog

from exporter.config import QueryJob
from exporter.errors import REASONS, CollectionError
from exporter.exposition import Family
from exporter.sources.base import Job, OnePart, Part, Resources
from exporter.sources.sql.engines import Server
from exporter.sources.sql.fetch import Rows, Statements, fetch, fetch_pipelined
from exporter.sources.sql.kind import CRASH_REASON, KIND, data_family
from exporter.sources.sql.pipeline import BATCHABLE_UNDER, Pipeline
from exporter.sources.sql.series import build_series
from exporter.sources.sql.servers import Servers
from exporter.sources.sql.slots import Slots
from exporter.sources.sql.totals import Totals
from exporter.sources.sql.wire import Whole

log = structlog.get_logger(__name__)
# A job's last result set is kept up to this size, so its next run recognises the same reply
# with a comparison (most monitoring replies are under 2 KB; 8,000 jobs keep at most 32 MB).
KEPT_AT_MOST = 4096


class SqlSource:
    """Runs configured queries; connections are shared per database server."""

    kind = KIND
    reasons: tuple[str, ...] = REASONS
    crash_reason = CRASH_REASON
    skips_rows = True

    def __init__(self, resources: Resources) -> None:
        self._state = resources.state
        self._totals: dict[str, Totals] = {}  # per job with accumulating metrics, once loaded
        self.engines = Servers()
        self._limit = Slots(resources.max_concurrent_queries)
        self._statements = Statements()
        self._quick: set[str] = set()  # jobs whose last statement finished within a batch's bound
        # Per job: the digest of its last reply, the spec it was rendered for, the part, and
        # the reply's result sets where small enough to keep (to recognise them next run).
        self._last: dict[str, tuple[bytes, QueryJob, Part, tuple[Whole | None, ...]]] = {}

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
        self._last.pop(job.id, None)

    def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """Run the query and render its rows (the runner enforces nothing else)."""
        return OnePart(self._run(job, deadline))

    async def _run(self, job: Job, deadline: float) -> Part:
        spec = _spec(job)
        server, pipeline = self.engines.get(spec.database)
        # Wait for the server's own slot first, so a slow server queues its own
        # jobs without holding global slots that other servers' tenants need.
        async with server.slots, self._limit:
            results = await self._fetch_all(job, server, pipeline, deadline)
        query = spec.query
        found = sum(rows.count for rows in results)
        if found < query.min_rows:
            message = f"{found} row(s), min_rows is {query.min_rows}"
            raise CollectionError("too_few_rows", message)
        if query.accumulates:
            part = await self._accumulated(job, results)
        else:
            part = self._rendered(job, results)
        if part.duplicates or part.dropped:
            log.warning(
                "series skipped", tenant=job.tenant, query=job.name,
                duplicates=part.duplicates, over_limit=part.dropped,
                max_series=query.max_series,
            )  # fmt: skip
        return part

    def _rendered(self, job: Job, results: Sequence[Rows]) -> Part:
        """The run's series; the last run's when the reply was the same, byte for byte.

        Most monitoring queries return the same rows poll after poll: decoding and rendering
        them again was a third of a run's CPU (docs/performance.md).
        """
        spec = _spec(job)
        digest = _digest(results)
        last = self._last.get(job.id)
        if last is not None and digest is not None and last[0] == digest and last[1] is spec:
            return last[2]
        columns, rows = _decoded(results)
        query = spec.query
        part = build_series(
            columns, rows, query.metrics, job.tenant, query.max_series, labels=spec.labels
        ).part(job.name)
        if digest is not None:
            kept = tuple(_kept(rows.whole) for rows in results)
            self._last[job.id] = (digest, spec, part, kept)
        return part

    async def _accumulated(self, job: Job, results: Sequence[Rows]) -> Part:
        """Add the run's rows to the job's durable totals and render them."""
        spec = _spec(job)
        query = spec.query
        # On a copy: a run that fails half-way adds nothing.
        totals = copy.deepcopy(await self._load(job))
        columns, rows = _decoded(results)
        result = build_series(
            columns, rows, query.metrics, job.tenant, query.max_series, totals=totals,
            labels=spec.labels,
        )  # fmt: skip
        # Before publishing: a crash now replays nothing, and no total seen goes down.
        await self._state.save(job.id, totals.to_state())
        self._totals[job.id] = totals
        return result.part(job.name)

    async def _fetch_all(
        self, job: Job, server: Server, pipeline: Pipeline | None, deadline: float
    ) -> list[Rows]:
        """The query's result, once per parameter set, all within the query's timeout."""
        spec = _spec(job)
        statement = self._statements.get(spec.query.sql, server)
        last = self._last.get(job.id)
        known = last[3] if last is not None and last[1] is spec else ()
        results: list[Rows] = []
        for index, params in enumerate(_parameter_sets(spec)):
            seconds = min(spec.query.timeout, max(0.001, deadline - time.monotonic()))
            if pipeline is None:
                results.append(await fetch(server, statement, params, seconds))
                continue
            # A job shares batches once it has proved quick (inline: each level of awaiting
            # costs every run twice).
            alone = job.id not in self._quick
            self._quick.discard(job.id)  # until this run proves quick again
            rows, elapsed = await fetch_pipelined(
                pipeline, spec.database.database, statement, params, seconds, alone=alone,
                known=known[index] if index < len(known) else None,
            )  # fmt: skip
            if elapsed is not None and elapsed < BATCHABLE_UNDER:
                self._quick.add(job.id)
            results.append(rows)
        return results

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


def _kept(whole: Whole | None) -> Whole | None:
    """`whole` if small enough to keep until the next run (it holds the reply's bytes)."""
    return whole if whole is not None and whole.size <= KEPT_AT_MOST else None


def _digest(results: Sequence[Rows]) -> bytes | None:
    """One digest for a run's replies, or None if any has none (SQLite)."""
    if len(results) == 1:
        return results[0].digest
    digests = [rows.digest for rows in results]
    return None if None in digests else b"".join(d for d in digests if d is not None)


def _decoded(results: Sequence[Rows]) -> tuple[list[str], list[Sequence[object]]]:
    """Column names (the first result's that has any) and every result's rows."""
    columns: list[str] = []
    found: list[Sequence[object]] = []
    try:
        for rows in results:
            columns = columns or rows.columns()
            found.extend(rows.decode())
    except pymysql.MySQLError as exc:  # a reply the server sent malformed
        raise CollectionError("query", f"query failed: {exc}") from exc
    return columns, found


def _parameter_sets(spec: QueryJob) -> list[Mapping[str, object]]:
    """The tenant's params, once per set of the query's `parameters` (over them)."""
    if not spec.query.parameters:
        return [spec.params]
    return [{**spec.params, **dict(values)} for values in spec.query.parameters]


def _spec(job: Job) -> QueryJob:
    spec: QueryJob = job.spec
    return spec
