"""The one runner around every collection of every source kind.

Timing, deadline, error classification, the stale-run guard after reloads, publishing,
self-metrics, their durable part and the log line all happen here, so no source repeats them.
"""

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import structlog
from opentelemetry.trace import Span, StatusCode

from exporter import spans
from exporter.errors import CollectionError
from exporter.histogram import Histogram
from exporter.outcomes import Served, publish_failure, publish_success
from exporter.selfmetrics import DURATION, DURATION_BUCKETS, JOB_FAMILIES, JobStats
from exporter.sources.base import Job, Part, Source
from exporter.state import ERRORS as STATE_ERRORS
from exporter.state import State, encode_entries
from exporter.store import Snapshot, SnapshotKey, SnapshotStore

log = structlog.get_logger(__name__)
DURATIONS_KEY: SnapshotKey = ("", "exporter", "collection_duration")
# Every job's health goes into one record this often (a job's own record is written with its
# first run, when it starts or stops failing, and at shutdown): after a crash a last success
# may read up to this much older than it was, never newer, until the job's next run. One
# fsynced file per job every 5 minutes added half again to the CPU of 1,000 tenants' runs.
HEALTH_EVERY = 300.0
RESTORING_AT_ONCE = 32  # health records read or written at once (start, shutdown)
DURATIONS_EVERY = 1.0  # seconds the duration histograms may lag the runs they count


def health_key(job: Job) -> str:
    """The state record of a job's outcomes, next to the source's own record of the job."""
    return f"{job.id}#health"


def all_health_key(shard: str) -> str:
    """The record of every job's outcomes on one shard (shards may share a state store)."""
    return f"#health/{shard}"


@dataclass
class _Active:
    """A job as currently configured, with the self-metrics of each of its parts."""

    job: Job
    stats: dict[str, JobStats]
    untracked: set[str] = field(default_factory=set)
    served: dict[str, Served] = field(default_factory=dict)  # what each part's last run left
    saved: dict[str, dict[str, object]] = field(default_factory=dict)  # its record's health
    # A part started or stopped failing since the health was written: noted by the run, not
    # found by comparing every part's record after each run.
    turned: bool = False


class Runner:
    """Adds, changes, runs and removes jobs of any source kind."""

    def __init__(
        self,
        store: SnapshotStore,
        sources: Mapping[str, Source],
        full: bool = False,
        state: State | None = None,
        shard: str = "0",
    ) -> None:
        self._store = store
        self.sources = sources
        self.full = full  # the series gauge too
        self.state = state or State(None)
        self._all_health = all_health_key(shard)
        self._all_health_due = time.monotonic() + HEALTH_EVERY
        self._all_health_writing: asyncio.Task[None] | None = None
        self._active: dict[str, _Active] = {}
        # Jobs per (tenant, kind), and the state errors last published for each.
        self._kinds: Counter[SnapshotKey] = Counter()
        self._state_errors: dict[SnapshotKey, tuple[int, dict[str, bytes]]] = {}
        self._durations = {kind: Histogram(DURATION_BUCKETS) for kind in sources}
        self._durations_pending: asyncio.TimerHandle | None = None
        store.register([*JOB_FAMILIES, DURATION, STATE_ERRORS])  # what any run may publish
        store.put(DURATIONS_KEY, self._durations_snapshot())
        store.before_render(self._put_durations)

    @property
    def stats(self) -> list[JobStats]:
        """Self-metrics of every part of every job."""
        return [s for active in self._active.values() for s in active.stats.values()]

    def jobs(self) -> list[Job]:
        """The jobs as currently configured."""
        return [active.job for active in self._active.values()]

    async def add(self, jobs: Sequence[Job]) -> None:
        """Track new jobs; their self-metrics show at once (as restored), data after a run."""
        for kind, source in self.sources.items():
            self._store.register(source.families([j for j in jobs if j.kind == kind]), kind)
        added = [self._track(job) for job in jobs]
        latest = await self._load_all_health() if added else {}
        await _each(added, partial(self._restore, latest=latest))
        for active in added:
            job = active.job
            for name, part_stats in active.stats.items():
                self._store.put(job.key(name), Snapshot(job.tenant, part_stats.render()))
            self._put_state_errors(job)

    def _track(self, job: Job) -> _Active:
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
                problems=source.skips_rows,
            )
            for name in source.parts(job)
        }
        active = self._active[job.id] = _Active(job, stats)
        self._kinds[_state_key(job)] += 1
        return active

    async def _load_all_health(self) -> dict[str, tuple[float, object]]:
        """Job id -> (when written, health) from the record of every job's health."""
        payload = await self.state.load(self._all_health)
        if payload is None:
            return {}
        try:
            written, jobs = float(payload["at"]), payload["jobs"]
            return {job_id: (written, health) for job_id, health in jobs.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            self.state.corrupt(self._all_health)
            return {}

    async def _restore(self, active: _Active, latest: Mapping[str, tuple[float, object]]) -> None:
        """Restore the newer of the job's own health record and its entry in the common one."""
        key = health_key(active.job)
        payload: object = await self.state.load(key)
        entry = latest.get(active.job.id)
        if entry is not None and (payload is None or entry[0] > _written(payload)):
            payload = entry[1]
        if payload is None:
            return
        try:
            for name, health in payload["parts"].items():  # type: ignore[index]
                if name in active.stats:
                    active.stats[name].restore(health)
        except (KeyError, TypeError, ValueError, AttributeError):
            self.state.corrupt(key)
            for stats in active.stats.values():  # none half-restored: all start unknown
                stats.restore({"success": None, "last_success": None, "failing_since": None})
            return
        active.saved = self._health(active)

    def set_full(self, full: bool) -> None:
        """Switch every job's series gauge on or off from its next run."""
        self.full = full
        for stats in self.stats:
            stats.full = full

    async def change(self, job: Job) -> None:
        """A job's settings changed: its next run uses them; its totals carry on."""
        active = self._active.get(job.id)
        if active is None:
            await self.add([job])
            return
        source = self.sources[job.kind]
        self._store.register(source.families([job]), job.kind)
        source.open(job)
        active.job = job
        for stats in active.stats.values():
            stats.interval = job.interval

    def remove(self, job: Job) -> None:
        """Stop tracking a job; its series disappear from the next scrape."""
        active = self._active.pop(job.id, None)
        if active is None:
            return
        self.sources[job.kind].close(active.job)
        for name in (*active.stats, *active.untracked):
            self._store.remove(job.key(name))
        state_key = _state_key(job)
        self._kinds[state_key] -= 1
        if self._kinds[state_key] <= 0:  # the tenant's last job of this kind
            del self._kinds[state_key]
            self._state_errors.pop(state_key, None)
            self._store.remove(state_key)

    async def run(self, job_id: str) -> None:
        """Collect a job once; every failure is recorded, none is raised."""
        active = self._active.get(job_id)
        if active is None:  # removed by a reload while this run was queued
            return
        if spans.on():
            await self._traced(active)
        else:  # the common case pays for no span at all
            await self._collect(active)
        if self._active.get(job_id) is active:
            await self._save_health(active)
            self._put_state_errors(active.job)

    async def _traced(self, active: _Active) -> None:
        """`_collect` as the root span of a trace, with the run's outcome."""
        job = active.job
        attributes = {"cockpit.tenant": job.tenant, "cockpit.source": job.kind,
                      "cockpit.job": job.name}  # fmt: skip
        with spans.tracer().start_as_current_span(f"collect {job.kind}", attributes=attributes,
                                                  record_exception=False) as span:  # fmt: skip
            _outcome(span, await self._collect(active))

    async def _collect(self, active: _Active) -> list[CollectionError]:
        """Run the job's source and publish each part; the errors of the parts that failed."""
        job, source = active.job, self.sources[active.job.kind]
        started = time.perf_counter()
        done: set[str] = set()
        errors: list[CollectionError] = []
        try:
            async for part in source.collect(job, time.monotonic() + job.timeout):
                self._publish(active, part, started)
                done.add(part.name)
                if part.error is not None:
                    errors.append(part.error)
        except CollectionError as exc:
            errors.append(exc)
            self._fail_rest(active, done, exc, started)
        except Exception as exc:
            # A bug must cost one run of one job, not the scheduler's worker.
            log.exception("collection crashed", tenant=job.tenant, source=job.kind, job=job.name)
            error = CollectionError(source.crash_reason, f"internal error: {type(exc).__name__}")
            errors.append(error)
            self._fail_rest(active, done, error, started)
        return errors

    async def flush(self) -> None:
        """Write every job's health as it is now (at shutdown: nothing is older after it)."""
        if self._all_health_writing is not None:
            await self._all_health_writing
        await _each(list(self._active.values()), partial(self._save_health, force=True))

    async def _save_health(self, active: _Active, force: bool = False) -> None:
        """Write the job's record when it starts or stops failing; everyone's now and then."""
        if self.state.store is None:
            return  # nowhere to write: not worth building the record after every run
        if force or active.turned or not active.saved:
            health = self._health(active)
            active.turned = False
            if health != active.saved:
                payload = {"parts": health, "at": time.time()}
                await self.state.save(health_key(active.job), payload)
                active.saved = health
        if not force and time.monotonic() >= self._all_health_due:
            self._all_health_due = time.monotonic() + HEALTH_EVERY
            if self._all_health_writing is None:
                task = asyncio.get_running_loop().create_task(self._save_all_health())
                self._all_health_writing = task

    async def _save_all_health(self) -> None:
        """One record of every job's health (a failure to write it counts for every job)."""
        try:
            actives = [self._active[job_id] for job_id in sorted(self._active)]
            # Entry by entry: a dict of every job's health would be about 1.7 MB of small
            # objects at 1,000 platform tenants, made and dropped every five minutes.
            entries = ((a.job.id, {"parts": self._health(a)}) for a in actives)
            data = encode_entries({"at": time.time()}, "jobs", entries)
            owners = (health_key(active.job) for active in actives)
            await self.state.save_encoded(self._all_health, data, owners)
        except Exception:  # a bug costs this record, not the task's waiters (shutdown)
            log.exception("health record crashed", record=self._all_health)
        finally:
            self._all_health_writing = None

    @staticmethod
    def _health(active: _Active) -> dict[str, dict[str, object]]:
        return {name: stats.health() for name, stats in active.stats.items()}

    def _put_state_errors(self, job: Job) -> None:
        key, revision = _state_key(job), self.state.revision
        published = self._state_errors.get(key)
        if published is not None and published[0] == revision:
            return  # no error counted since: rendering after every run would cost more
        bodies = self.state.render(job.tenant, job.kind)
        if bodies and (published is None or bodies != published[1]):
            self._store.put(key, Snapshot(job.tenant, bodies))
        self._state_errors[key] = (revision, bodies)

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
        failing_since = stats.failing_since
        duration = part.duration if part.duration is not None else time.perf_counter() - started
        bodies, shadowed = self._store.claim(key, job.tenant, part.bodies)
        fresh = Served.split(bodies, self._store.kind)
        if part.error is not None:
            # Counters the source still vouches for (pages that did arrive) win over the
            # last success's; gauges a failed run brings are never served.
            served = active.served.setdefault(part.name, Served())
            served.lasting |= fresh.lasting
            publish_failure(self._store, key, stats, duration=duration, error=part.error,
                            served=served)  # fmt: skip
        else:
            stats.nulls += part.nulls
            stats.duplicates += part.duplicates + shadowed
            stats.dropped += part.dropped
            stats.invalid += part.invalid
            active.served[part.name] = fresh
            publish_success(self._store, key, stats, duration=duration, series=part.series,
                            served=fresh, stale_after=job.stale_after)  # fmt: skip
        if stats.failing_since != failing_since:
            active.turned = True
        self._durations[job.kind].observe(duration, spans.kept_trace_id())
        self._durations_due()

    def _durations_due(self) -> None:
        """Publish the duration histograms within DURATIONS_EVERY, or at the next scrape.

        Rendering them after each of thousands of runs cost more than the runs' own series;
        a scrape never sees them behind (the store calls `_put_durations` before rendering).
        """
        if self._durations_pending is None:
            loop = asyncio.get_running_loop()
            self._durations_pending = loop.call_later(DURATIONS_EVERY, self._put_durations)

    def _put_durations(self) -> None:
        if self._durations_pending is None:
            return
        self._durations_pending.cancel()
        self._durations_pending = None
        self._store.put(DURATIONS_KEY, self._durations_snapshot())

    def _durations_snapshot(self) -> Snapshot:
        def body(exemplars: bool) -> bytes:
            return "".join(
                histogram.lines(DURATION.name, f'source="{kind}"', exemplars)
                for kind, histogram in sorted(self._durations.items())
            ).encode()

        # Exemplars (a recent run's trace id per bucket) only where OpenMetrics is read.
        openmetrics = {DURATION.name: body(True)} if spans.on() else None
        return Snapshot(None, {DURATION.name: body(False)}, operators_only=True,
                        openmetrics=openmetrics)  # fmt: skip


def _written(payload: object) -> float:
    """When a health record was written; 0 for one of before this was recorded, or unreadable."""
    written = payload.get("at") if isinstance(payload, dict) else None
    return float(written) if isinstance(written, int | float) else 0.0


async def _each(items: Sequence[_Active], work: Callable[[_Active], Awaitable[None]]) -> None:
    """`work` on every item, RESTORING_AT_ONCE at a time (state reads and writes are I/O)."""
    slots = asyncio.Semaphore(RESTORING_AT_ONCE)

    async def one(item: _Active) -> None:
        async with slots:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))


def _outcome(span: Span, errors: list[CollectionError]) -> None:
    """The run's outcome on its root span: ok, or the first error's reason and message."""
    if not errors:
        span.set_attribute("cockpit.outcome", "success")
        return
    span.set_attribute("cockpit.outcome", "failure")
    span.set_attribute("error.type", errors[0].reason)
    span.set_status(StatusCode.ERROR, str(errors[0]))


def _state_key(job: Job) -> SnapshotKey:
    """One snapshot of state errors per tenant and source kind (their labels)."""
    return (job.tenant, job.kind, "#state")
