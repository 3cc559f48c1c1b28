"""The platform source: one job per tenant polls processes, agents, schedules and runs.

Each endpoint is a part of its own, plus the client's request counters.
"""

import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from exporter.config import Config, PlatformSpec
from exporter.errors import PLATFORM_REASONS, CollectionError
from exporter.exposition import Family
from exporter.sources.base import Job, Part, Resources, safe_url
from exporter.sources.platform import families, models
from exporter.sources.platform.client import TenantClient
from exporter.sources.platform.render import (
    Lines,
    render_agents,
    render_processes,
    render_runs,
    render_schedules,
)
from exporter.sources.platform.runs import RunTracker

KIND = "platform"
ENDPOINTS = ("processes", "agents", "schedules", "runs")


def jobs(config: Config) -> list[Job]:
    """One poll job per tenant with a platform section."""
    return [
        Job(s.tenant, KIND, "poll", s.interval, s.timeout, s, safe_url(s.base_url), s.stale_after)
        for s in config.platforms
    ]


@dataclass
class _Tenant:
    spec: PlatformSpec
    client: TenantClient
    tracker: RunTracker
    restored: bool = False
    saved: bytes = b""  # digest of the last state written, to skip writing it unchanged
    last_success: dict[str, float] = field(default_factory=dict)  # monotonic, per endpoint


class PlatformSource:
    """Polls every tenant's API through the one shared HTTP session."""

    kind = KIND
    reasons: tuple[str, ...] = PLATFORM_REASONS
    crash_reason = "decode"
    skips_rows = False

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._tenants: dict[str, _Tenant] = {}

    def families(self, jobs: Sequence[Job]) -> Iterable[Family]:
        """The platform's fixed families."""
        return [*families.DATA_FAMILIES, *families.CLIENT_FAMILIES] if jobs else []

    def parts(self, job: Job) -> tuple[str, ...]:
        """One part per endpoint."""
        return ENDPOINTS

    def open(self, job: Job) -> None:
        """A new tenant, or a changed spec (new secret, URL, timeouts): run counts carry on."""
        spec: PlatformSpec = job.spec
        tenant = self._tenants.get(job.id)
        if tenant is None:
            client = TenantClient(self._resources.http(), spec)
            self._tenants[job.id] = _Tenant(spec, client, _tracker(spec))
            return
        tenant.spec = spec
        tenant.client = TenantClient(self._resources.http(), spec, tenant.client.stats)

    def close(self, job: Job) -> None:
        """Forget the tenant's cursor, counters and client."""
        self._tenants.pop(job.id, None)

    def tenant(self, job_id: str) -> _Tenant:
        """The live state of one tenant's poll (tests inspect its run tracker)."""
        return self._tenants[job_id]

    async def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """Poll every endpoint within the deadline; each endpoint fails on its own."""
        tenant = self._tenants[job.id]
        if not tenant.restored:
            await self._restore(job.id, tenant)
        for endpoint in self._order(tenant):
            started = time.perf_counter()
            try:
                lines = await self._fetch(tenant, endpoint, deadline)
                part = Part(endpoint, lines.bodies(), lines.series)
                tenant.last_success[endpoint] = time.monotonic()
            except CollectionError as exc:
                # The run counters as they are now include the pages that did arrive; the
                # runner serves their counters and histograms, not their gauges.
                kept = self._runs(tenant).bodies() if endpoint == "runs" else {}
                part = Part(endpoint, kept, error=exc)
            part.duration = time.perf_counter() - started
            yield part
            if endpoint == "runs":
                # Only now, with the counts published: a crash before this line replays
                # these runs from the older state, which never counts one twice.
                await self._save(job.id, tenant)
        yield Part("client", tenant.client.stats.render(), tracked=False)

    @staticmethod
    def _order(tenant: _Tenant) -> list[str]:
        """Endpoints in the order to poll them: the one that waited longest first.

        When a rate limit lets only some requests through, every endpoint makes progress in
        turn.
        """
        return sorted(ENDPOINTS, key=lambda e: tenant.last_success.get(e, 0.0))

    async def _restore(self, key: str, tenant: _Tenant) -> None:
        tenant.restored = True
        payload = await self._resources.state.load(key)
        if payload is None:
            return
        try:
            tenant.tracker.restore(payload["runs"])
        except (KeyError, TypeError, ValueError, AttributeError):
            self._resources.state.corrupt(key)
            tenant.tracker = _tracker(tenant.spec)

    async def _save(self, key: str, tenant: _Tenant) -> None:
        if self._resources.state.store is None:
            return  # nowhere to save: encoding it every poll was CPU for nothing
        payload = {"runs": tenant.tracker.to_state()}
        encoded = json.dumps(payload, sort_keys=True).encode()
        digest = hashlib.blake2b(encoded, digest_size=16).digest()  # not 2 KB a tenant
        if digest != tenant.saved:
            await self._resources.state.save(key, payload)
            tenant.saved = digest

    async def _fetch(self, tenant: _Tenant, endpoint: str, deadline: float) -> Lines:
        tenant_id, client = tenant.spec.tenant, tenant.client
        if endpoint == "runs":
            tracker = tenant.tracker
            query = {"updated_since": _rfc3339(tracker.since(time.time()))}
            tracker.begin(time.time())
            async for items in client.pages("runs", query, deadline):
                tracker.page(models.parse_items("runs", models.Run, items))
            tracker.complete()
            return self._runs(tenant)
        items = await client.fetch_all(endpoint, {}, deadline)
        if endpoint == "processes":
            processes = models.parse_items(endpoint, models.Process, items)
            ids = [p.id for p in processes]
            tenant.tracker.listed(ids, time.time(), tenant.spec.forget_after)
            return render_processes(tenant_id, processes)
        if endpoint == "agents":
            return render_agents(tenant_id, models.parse_items(endpoint, models.Agent, items))
        schedules = models.parse_items(endpoint, models.Schedule, items)
        return render_schedules(tenant_id, schedules)

    @staticmethod
    def _runs(tenant: _Tenant) -> Lines:
        return render_runs(tenant.spec.tenant, tenant.tracker, time.time())

    async def retain(self, jobs: Sequence[Job]) -> None:
        """Nothing shared to free: the HTTP session is the process's."""

    async def aclose(self) -> None:
        """Nothing to close: the process closes the HTTP session."""


def _tracker(spec: PlatformSpec) -> RunTracker:
    return RunTracker(spec.overlap, spec.lookback, spec.history)


def _rfc3339(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
