"""Wire config, collectors, scheduler and HTTP server into a running exporter."""

import asyncio
import os
import signal
import ssl
import time
from collections.abc import Coroutine, Sequence
from functools import partial
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from exporter.access import AccessPolicy
from exporter.config import Config, ConfigError, Job, PlatformSpec, load_config
from exporter.platform.collector import PlatformCollector, poll_key
from exporter.readiness import Readiness
from exporter.reconcile import diff
from exporter.scheduler import Scheduler
from exporter.selfmetrics import (
    BUILD_INFO,
    CONFIG_FAMILIES,
    JOB_FAMILIES,
    JobStats,
    build_info_snapshot,
    config_snapshot,
)
from exporter.server import Endpoints, bound_port, make_app
from exporter.settings import Settings, split_address
from exporter.sql.collector import SqlCollector, snapshot_key
from exporter.sql.engines import Engines
from exporter.store import SnapshotStore
from exporter.tls import configure, server_context
from exporter.webconfig import WebConfig, check_scopes, load_web_config

log = structlog.get_logger(__name__)
# Per-host limit: one platform host serving many tenants gets a bounded number of
# connections; the total bounds sockets across all hosts.
HTTP_LIMIT, HTTP_LIMIT_PER_HOST = 256, 64
CONFIG_KEY = ("", "exporter", "config")


class Exporter:
    """One running exporter: collection in the background, snapshots served over HTTP."""

    def __init__(
        self, config: Config, settings: Settings, web_config: WebConfig | None = None
    ) -> None:
        self.config = config
        self.settings = settings
        self.web_config = web_config or WebConfig()
        self.policy = AccessPolicy.of(self.web_config)
        self.store = SnapshotStore()
        self.engines = Engines()
        self.sql = SqlCollector(self.store, self.engines, config.limits.max_concurrent_queries)
        self.platform = PlatformCollector(self.store, self._http)
        self.readiness = Readiness(settings.ready_grace_period)
        self.scheduler = Scheduler()
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._reload_lock = asyncio.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._loaded_at = time.time()
        self.port = 0

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=HTTP_LIMIT, limit_per_host=HTTP_LIMIT_PER_HOST)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def run_job(self, job: Job) -> None:
        """Collect one SQL job now (the scheduler calls this; tests may too)."""
        await self._tracked(self.sql.run(job))
        self.readiness.done(snapshot_key(job))

    async def poll_platform(self, spec: PlatformSpec) -> None:
        """Poll one tenant's platform API now."""
        await self._tracked(self.platform.run(spec.tenant))
        self.readiness.done(poll_key(spec.tenant))

    async def _tracked(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` as an in-flight run that shutdown waits for."""
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await work
        finally:
            if task is not None:
                self._inflight.discard(task)

    def _stats(self) -> list[JobStats]:
        return [*self.sql.stats.values(), *self.platform.stats]

    async def start(self, schedule: bool = True) -> None:
        """Publish initial state, start the schedule and listen for scrapes."""
        self.store.register([BUILD_INFO, *CONFIG_FAMILIES, *JOB_FAMILIES])
        self.store.put(("", "exporter", "build_info"), build_info_snapshot())
        self.store.put(CONFIG_KEY, config_snapshot(True, self._loaded_at, self.config.digest))
        self._add_jobs(self.config.jobs, self.config.platforms)
        if schedule:
            self.scheduler.start()
        await self._serve()

    async def _serve(self) -> None:
        endpoints = Endpoints(
            store=self.store,
            readiness=self.readiness,
            tenants=lambda: self.config.tenants,
            stats=self._stats,
            policy=lambda: self.policy,
            reload=self.reload if self.settings.enable_reload else None,
        )
        self._runner = web.AppRunner(make_app(endpoints), access_log=None, handle_signals=False)
        await self._runner.setup()
        host, port = split_address(self.settings.listen_address)
        tls = self.web_config.tls_server_config
        context = self._ssl = server_context(tls) if tls is not None else None
        site = web.TCPSite(self._runner, host, port, ssl_context=context)
        await site.start()
        self.port = bound_port(site)
        log.info(
            "exporter started",
            listen=f"{host or '*'}:{self.port}",
            tls=context is not None,
            auth=self.web_config.auth_required,
            tenants=len(self.config.tenants),
            jobs=len(self.config.jobs) + len(self.config.platforms),
        )
        if context is None or not self.web_config.auth_required:
            log.warning(
                "endpoints not protected",
                tls=context is not None,
                auth=self.web_config.auth_required,
                hint="pass --web.config.file with tls_server_config and credentials",
            )

    def _add_jobs(self, jobs: Sequence[Job], specs: Sequence[PlatformSpec]) -> None:
        self.sql.add(jobs)
        self.platform.add(specs)
        self.readiness.expect(snapshot_key(job) for job in jobs)
        self.readiness.expect(poll_key(spec.tenant) for spec in specs)
        for job in jobs:
            self._schedule_job(job)
        for spec in specs:
            self._schedule_platform(spec)

    def _schedule_job(self, job: Job) -> None:
        job_id = f"{job.tenant}/sql/{job.query.name}"
        self.scheduler.add(job_id, job.query.interval, partial(self.run_job, job))

    def _schedule_platform(self, spec: PlatformSpec) -> None:
        job_id = f"{spec.tenant}/platform"
        self.scheduler.add(job_id, spec.interval, partial(self.poll_platform, spec))

    async def reload(self) -> list[str]:
        """Re-read the config (and web config) files; keep the old ones if either is bad."""
        async with self._reload_lock:
            try:
                config = load_config(self.settings.config) if self.settings.config else None
                web = self._load_web_config()
                self._check_access(config or self.config, web)
            except ConfigError as exc:
                failed = config_snapshot(False, self._loaded_at, self.config.digest)
                self.store.put(CONFIG_KEY, failed)
                log.error("reload failed", file=exc.source, problems=exc.problems)
                return [str(exc)]
            if web is not None:
                self._apply_web_config(web)
            if config is not None:
                await self.apply(config)
            return []

    def _check_access(self, config: Config, web: WebConfig | None) -> None:
        """Refuse a reload that would widen access.

        Scopes naming unknown tenants, or credentials switched off: an emptied user list
        must not open the endpoints.
        """
        source = str(self.settings.web_config_file or "web config")
        check_scopes(web or self.web_config, config.tenants, source)
        if web is not None and self.web_config.auth_required and not web.auth_required:
            raise ConfigError(
                source, ["reload would switch authentication off; restart to do that"]
            )

    def _apply_web_config(self, web: WebConfig) -> None:
        """New credentials apply at once; new certificates to connections from now on."""
        tls = web.tls_server_config
        if (tls is None) != (self._ssl is None):
            log.warning("tls change needs a restart", tls_now=self._ssl is not None)
        elif tls is not None and self._ssl is not None:
            # Settings loaded into the serving context apply to new handshakes. CAs can
            # only be added to a live context: dropping one needs a restart.
            configure(self._ssl, tls)
        self.web_config, self.policy = web, AccessPolicy.of(web)

    def _load_web_config(self) -> WebConfig | None:
        path = self.settings.web_config_file
        return load_web_config(path) if path is not None else None

    async def apply(self, config: Config) -> None:
        """Switch to `config`: start new jobs, stop removed ones, keep unchanged snapshots."""
        jobs = diff({j.key: j for j in self.config.jobs}, {j.key: j for j in config.jobs})
        platforms = diff(
            {s.tenant: s for s in self.config.platforms}, {s.tenant: s for s in config.platforms}
        )
        for job in jobs.removed:
            self.scheduler.remove(f"{job.tenant}/sql/{job.query.name}")
            self.sql.remove(job)
            self.readiness.forget(snapshot_key(job))
        for spec in platforms.removed:
            self.scheduler.remove(f"{spec.tenant}/platform")
            self.platform.remove(spec.tenant)
            self.readiness.forget(poll_key(spec.tenant))
        self._add_jobs(jobs.added, platforms.added)
        for job in jobs.changed:
            self.sql.add([job])
            self._schedule_job(job)
        for spec in platforms.changed:
            self.platform.update(spec)
            self._schedule_platform(spec)
        self.config = config
        await self.engines.retain({job.database.pool_key for job in config.jobs})
        self._loaded_at = time.time()
        self.store.put(CONFIG_KEY, config_snapshot(True, self._loaded_at, config.digest))
        log.info("config reloaded", jobs=jobs.summary, platforms=platforms.summary)

    async def stop(self) -> None:
        """Stop gracefully: not ready, no new runs, a grace period for running ones, close."""
        self.readiness.stopping()
        # Pause, not shut down: APScheduler's shutdown cancels the runs in progress, and
        # those get the grace period first.
        self.scheduler.pause()
        if self._inflight:
            grace = self.settings.shutdown_grace_period
            _, late = await asyncio.wait(set(self._inflight), timeout=grace)
            for task in late:
                task.cancel()
            if late:
                log.warning("runs cancelled at shutdown", runs=len(late), grace_seconds=grace)
                await asyncio.wait(late, timeout=1.0)
        self.scheduler.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.engines.close()
        if self._session is not None:
            await self._session.close()
        log.info("exporter stopped")


async def serve(config: Config, settings: Settings, web_config: WebConfig | None = None) -> int:
    """Run until SIGTERM or SIGINT (a second one exits at once); SIGHUP reloads."""
    exporter = Exporter(config, settings, web_config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if stop.is_set():
            log.warning("second signal, exiting now")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop)
    reloads: set[asyncio.Task[list[str]]] = set()

    def on_hangup() -> None:
        task = loop.create_task(exporter.reload())
        reloads.add(task)  # keep a reference until it is done
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    await exporter.start()
    await stop.wait()
    log.info("shutting down", grace_seconds=settings.shutdown_grace_period)
    await exporter.stop()
    return 0
