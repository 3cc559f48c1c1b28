"""Wire config, collectors, scheduler and HTTP server into a running exporter."""

import asyncio
import signal
from functools import partial

import aiohttp
import structlog
from aiohttp import web

from exporter.collector import SqlCollector, snapshot_key
from exporter.config import Config, Job, PlatformSpec
from exporter.platform.collector import PlatformCollector, poll_key
from exporter.readiness import Readiness
from exporter.scheduler import Scheduler
from exporter.selfmetrics import BUILD_INFO, JobStats, build_info_snapshot
from exporter.server import bound_port, make_app
from exporter.settings import Settings, split_address
from exporter.sql.engines import Engines
from exporter.store import SnapshotStore

log = structlog.get_logger(__name__)
# Per-host limit: one platform host serving many tenants gets a bounded number of
# connections; the total bounds sockets across all hosts.
HTTP_LIMIT, HTTP_LIMIT_PER_HOST = 256, 64


class Exporter:
    """One running exporter: collection in the background, snapshots served over HTTP."""

    def __init__(self, config: Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.store = SnapshotStore()
        self.engines = Engines()
        self.collector = SqlCollector(
            self.store, self.engines, config.limits.max_concurrent_queries
        )
        self.platform = PlatformCollector(self.store, self._http)
        self.readiness = Readiness(settings.ready_grace_period)
        self.scheduler = Scheduler()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=HTTP_LIMIT, limit_per_host=HTTP_LIMIT_PER_HOST)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def run_job(self, job: Job) -> None:
        """Collect one SQL job now (the scheduler calls this; tests may too)."""
        await self.collector.run(job)
        self.readiness.done(snapshot_key(job))

    async def poll_platform(self, spec: PlatformSpec) -> None:
        """Poll one tenant's platform API now."""
        await self.platform.run(spec.tenant)
        self.readiness.done(poll_key(spec.tenant))

    def _stats(self) -> list[JobStats]:
        return [*self.collector.stats.values(), *self.platform.stats]

    async def start(self, schedule: bool = True) -> None:
        """Publish initial state, start the schedule and listen for scrapes."""
        self.store.register([BUILD_INFO])
        self.store.put(("", "exporter", "build_info"), build_info_snapshot())
        self._add_jobs()
        if schedule:
            self.scheduler.start()
        app = make_app(self.store, self.readiness, lambda: self.config.tenants, self._stats)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = split_address(self.settings.listen_address)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = bound_port(site)
        log.info(
            "exporter started",
            listen=f"{host or '*'}:{self.port}",
            tls=False,
            tenants=len(self.config.tenants),
            jobs=len(self.config.jobs) + len(self.config.platforms),
        )

    def _add_jobs(self) -> None:
        self.collector.add(self.config.jobs)
        self.platform.add(self.config.platforms)
        self.readiness.expect(snapshot_key(job) for job in self.config.jobs)
        self.readiness.expect(poll_key(spec.tenant) for spec in self.config.platforms)
        for job in self.config.jobs:
            job_id = f"{job.tenant}/sql/{job.query.name}"
            self.scheduler.add(job_id, job.query.interval, partial(self.run_job, job))
        for spec in self.config.platforms:
            job_id = f"{spec.tenant}/platform"
            self.scheduler.add(job_id, spec.interval, partial(self.poll_platform, spec))

    async def stop(self) -> None:
        """Stop scheduling, stop serving, close pools and sessions."""
        self.readiness.stopping()
        self.scheduler.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.engines.close()
        if self._session is not None:
            await self._session.close()
        log.info("exporter stopped")


async def serve(config: Config, settings: Settings) -> int:
    """Run until SIGTERM or SIGINT; exit code 0 on a clean stop."""
    exporter = Exporter(config, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await exporter.start()
    await stop.wait()
    log.info("shutting down")
    await exporter.stop()
    return 0
