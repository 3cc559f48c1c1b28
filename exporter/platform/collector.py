"""Poll one tenant's platform API: processes, agents, schedules and runs, each its own outcome."""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
import structlog

from exporter.config import PlatformSpec
from exporter.errors import PLATFORM_REASONS, CollectionError
from exporter.outcomes import publish_failure, publish_success
from exporter.platform import families, models
from exporter.platform.client import TenantClient
from exporter.platform.render import (
    Lines,
    display_names,
    render_agents,
    render_processes,
    render_runs,
    render_schedules,
)
from exporter.platform.runs import RunTracker
from exporter.selfmetrics import JobStats
from exporter.store import Snapshot, SnapshotKey, SnapshotStore

log = structlog.get_logger(__name__)
SOURCE = "platform"
# Processes first: the others are labelled with process names.
ENDPOINTS = ("processes", "agents", "schedules", "runs")


def poll_key(tenant: str) -> SnapshotKey:
    """Readiness key of a tenant's platform poll."""
    return (tenant, SOURCE, "poll")


@dataclass
class _Tenant:
    spec: PlatformSpec
    client: TenantClient
    tracker: RunTracker
    stats: dict[str, JobStats]
    process_names: dict[str, str]


class PlatformCollector:
    """Polls every tenant's API through one shared HTTP session."""

    def __init__(self, store: SnapshotStore, session: Callable[[], aiohttp.ClientSession]) -> None:
        self._store = store
        self._session = session
        self._tenants: dict[str, _Tenant] = {}

    @property
    def stats(self) -> list[JobStats]:
        """Per-endpoint run statistics of every tenant."""
        return [s for t in self._tenants.values() for s in t.stats.values()]

    def add(self, specs: Iterable[PlatformSpec]) -> None:
        """Register tenants; their self-metrics show at once, data after the first poll."""
        self._store.register([*families.DATA_FAMILIES, *families.CLIENT_FAMILIES], SOURCE)
        for spec in specs:
            stats = {
                e: JobStats(spec.tenant, SOURCE, e, reasons=PLATFORM_REASONS) for e in ENDPOINTS
            }
            tracker = RunTracker(spec.overlap, spec.lookback, spec.history)
            client = TenantClient(self._session(), spec)
            self._tenants[spec.tenant] = _Tenant(spec, client, tracker, stats, {})
            for endpoint, job in stats.items():
                self._store.put(
                    (spec.tenant, SOURCE, endpoint), Snapshot(spec.tenant, job.render())
                )

    def update(self, spec: PlatformSpec) -> None:
        """Take a changed spec (new secret, URL, timeouts); run counts carry on."""
        tenant = self._tenants.get(spec.tenant)
        if tenant is None:
            self.add([spec])
            return
        tenant.spec = spec
        tenant.client = TenantClient(self._session(), spec, tenant.client.stats)

    def remove(self, tenant: str) -> None:
        """Forget a tenant and its series."""
        self._tenants.pop(tenant, None)
        for endpoint in (*ENDPOINTS, "client"):
            self._store.remove((tenant, SOURCE, endpoint))

    async def run(self, tenant_id: str) -> None:
        """Poll every endpoint of one tenant within the poll deadline."""
        tenant = self._tenants.get(tenant_id)
        if tenant is None:
            return
        deadline = time.monotonic() + tenant.spec.timeout
        for endpoint in ENDPOINTS:
            await self._poll(tenant, endpoint, deadline)
        if self._current(tenant):
            client_snapshot = Snapshot(tenant_id, tenant.client.stats.render())
            self._store.put((tenant_id, SOURCE, "client"), client_snapshot)

    def _current(self, tenant: _Tenant) -> bool:
        """False if a reload removed the tenant mid-poll (publishing would resurrect it)."""
        return self._tenants.get(tenant.spec.tenant) is tenant

    async def _poll(self, tenant: _Tenant, endpoint: str, deadline: float) -> None:
        key = (tenant.spec.tenant, SOURCE, endpoint)
        stats = tenant.stats[endpoint]
        started = time.perf_counter()
        try:
            lines = await self._fetch(tenant, endpoint, deadline)
            bodies = lines.bodies()
        except CollectionError as exc:
            error: CollectionError | None = exc
        except Exception as exc:
            log.exception("collection crashed", tenant=tenant.spec.tenant, endpoint=endpoint)
            error = CollectionError("decode", f"{endpoint}: internal error: {type(exc).__name__}")
        else:
            error = None
        if not self._current(tenant):
            return
        duration = time.perf_counter() - started
        if error is None:
            publish_success(
                self._store, key, stats, duration=duration, series=lines.series, bodies=bodies,
            )  # fmt: skip
            return
        # Run counters stay: they are totals so far, still true when a poll fails.
        kept = self._runs(tenant).bodies() if endpoint == "runs" else None
        publish_failure(self._store, key, stats, duration=duration, error=error, kept=kept)

    async def _fetch(self, tenant: _Tenant, endpoint: str, deadline: float) -> Lines:
        tenant_id, client = tenant.spec.tenant, tenant.client
        if endpoint == "runs":
            since = tenant.tracker.since(time.time())
            items = await client.fetch_all("runs", {"updated_since": _rfc3339(since)}, deadline)
            tenant.tracker.update(models.parse_items("runs", models.Run, items), time.time())
            return self._runs(tenant)
        items = await client.fetch_all(endpoint, {}, deadline)
        if endpoint == "processes":
            processes = models.parse_items(endpoint, models.Process, items)
            tenant.process_names = display_names((p.id, p.name) for p in processes)
            return render_processes(tenant_id, processes)
        if endpoint == "agents":
            return render_agents(tenant_id, models.parse_items(endpoint, models.Agent, items))
        schedules = models.parse_items(endpoint, models.Schedule, items)
        return render_schedules(tenant_id, schedules, tenant.process_names)

    @staticmethod
    def _runs(tenant: _Tenant) -> Lines:
        return render_runs(tenant.spec.tenant, tenant.tracker, tenant.process_names)


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
