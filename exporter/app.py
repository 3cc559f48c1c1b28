"""Wire config, collector, scheduler and HTTP server into a running exporter."""

import asyncio
import signal

import structlog
from aiohttp import web

from exporter.collector import SqlCollector, snapshot_key
from exporter.config import Config, Job
from exporter.readiness import Readiness
from exporter.scheduler import Scheduler
from exporter.selfmetrics import BUILD_INFO, JobStats, build_info_snapshot
from exporter.server import make_app
from exporter.settings import Settings, split_address
from exporter.sql.engines import Engines
from exporter.store import SnapshotStore

log = structlog.get_logger(__name__)


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
        self.readiness = Readiness(settings.ready_grace_period)
        self.scheduler = Scheduler(self.run_job)
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def run_job(self, job: Job) -> None:
        """Collect one job now (the scheduler calls this; tests may too)."""
        await self.collector.run(job)
        self.readiness.done(snapshot_key(job))

    def _stats(self) -> list[JobStats]:
        return list(self.collector.stats.values())

    async def start(self, schedule: bool = True) -> None:
        """Publish initial state, start the schedule and listen for scrapes."""
        self.store.register([BUILD_INFO])
        self.store.put(("", "exporter", "build_info"), build_info_snapshot())
        self.collector.add(self.config.jobs)
        self.readiness.expect(snapshot_key(job) for job in self.config.jobs)
        for job in self.config.jobs:
            self.scheduler.add(job)
        if schedule:
            self.scheduler.start()
        app = make_app(self.store, self.readiness, lambda: self.config.tenants, self._stats)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = split_address(self.settings.listen_address)
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._bound_port(site)
        log.info(
            "exporter started",
            listen=f"{host or '*'}:{self.port}",
            tls=False,
            tenants=len(self.config.tenants),
            jobs=len(self.config.jobs),
        )

    @staticmethod
    def _bound_port(site: web.TCPSite) -> int:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1]) if sockets else 0

    async def stop(self) -> None:
        """Stop scheduling, stop serving, close pools."""
        self.readiness.stopping()
        self.scheduler.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.engines.close()
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
