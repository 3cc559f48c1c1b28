"""Wire config, sources, collection and the HTTP server into a running exporter."""

import asyncio
import os
import signal
import ssl
import time

import aiohttp
import structlog
from aiohttp import web

from exporter import auditing, systemd
from exporter.access import AccessPolicy
from exporter.collection import Collection
from exporter.config import Config, ConfigError, load_config, parse_config, tenant_model
from exporter.discovery import FAMILIES as DISCOVERY_FAMILIES
from exporter.discovery import Discovery, TenantEntry, needed_params
from exporter.exitcodes import fail
from exporter.fds import AcceptErrors, connection_cap, raise_limit, soft_limit
from exporter.listener import KEEPALIVE_TIMEOUT, Guard, GuardedSite
from exporter.logs import report_left_out
from exporter.memory import trim_periodically
from exporter.observers import Observers
from exporter.readiness import Readiness
from exporter.reconcile import Diff
from exporter.secretwatch import SecretWatch
from exporter.selfmetrics import (
    BUILD_INFO,
    CONFIG_FAMILIES,
    build_info_snapshot,
    config_snapshot,
    expiry_snapshot,
    scopes_snapshot,
)
from exporter.server import Endpoints, make_app
from exporter.settings import Settings, split_address
from exporter.sharding import FAMILIES as SHARD_FAMILIES
from exporter.sharding import resolve, shard_snapshot
from exporter.sources.base import Job, Resources
from exporter.sources.http import new_session
from exporter.sources.registry import all_jobs, make_sources
from exporter.sources.runner import Runner
from exporter.state import FileStore, State, StateError
from exporter.store import SnapshotStore
from exporter.stores import open_store
from exporter.tls import configure, server_context
from exporter.webconfig import WebConfig, load_web_config, unknown_scopes

log = structlog.get_logger(__name__)
CONFIG_KEY = ("", "exporter", "config")
SCOPES_KEY = ("", "exporter", "scopes")
EXPIRY_KEY = ("", "exporter", "token_expiry")
DISCOVERY_KEY = ("", "exporter", "discovery")
SHARD_KEY = ("", "exporter", "shard")
STARTING = "#starting"  # a readiness key no job has


class ListenError(Exception):
    """The HTTP port could not be bound; says which address and what to change."""

    def __init__(self, address: str, exc: OSError) -> None:
        # asyncio wraps the errno text in its own sentence: the errno alone reads better.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        super().__init__(
            f"cannot listen on {address}: {reason.lower()};"
            " choose another with --web.listen-address"
        )


class SocketError(ListenError):
    """`--web.systemd-socket` without a socket from systemd; says what is missing."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


class Exporter:
    """One running exporter: the wiring of collection, snapshots and the HTTP endpoints."""

    def __init__(
        self, config: Config, settings: Settings, web_config: WebConfig | None = None
    ) -> None:
        self.config = config
        self.settings = settings
        self.web_config = web_config or WebConfig()
        self.policy = AccessPolicy.of(self.web_config)
        self.shard = resolve(settings.shard, settings.total_shards)
        self.owned = 0  # tenants of the config this shard collects, set by _jobs
        self.store = SnapshotStore()
        self.state = State(
            open_store(
                settings.state_dir, settings.state_mysql_dsn, settings.state_mysql_password_file
            )
        )
        resources = Resources(self._http, config.limits.max_concurrent_queries, self.state)
        self.sources = make_sources(resources)
        full = config.limits.self_metrics == "full"
        self.runner = Runner(self.store, self.sources, full, self.state, str(self.shard.index))
        self.readiness = Readiness(settings.ready_grace_period)
        self.collection = Collection(self.runner, self.readiness)
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        cap = connection_cap(settings.max_connections, soft_limit())
        self.guard = Guard(cap, settings.read_header_timeout)
        self._reload_lock = asyncio.Lock()
        self._ssl: ssl.SSLContext | None = None
        self._loaded_at = time.time()
        self.port = 0
        self.links: dict[str, str] = {}  # extra links for the landing page (the demo's simulator)
        self.discovery: Discovery | None = None
        self._discovered: list[TenantEntry] = []
        self._shadowed: set[str] = set()
        self._started = False
        self.secrets: SecretWatch | None = None  # made at start, with the config's files
        self.observers = Observers(settings)  # traces and the audit trail, when configured

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session()
        return self._session

    async def run_job(self, job: Job) -> None:
        """Collect one job now (the scheduler does this by id; tests may call it)."""
        await self.collection.run(job.id)

    async def start(self, schedule: bool = True) -> None:
        """Listen first (a taken port fails before any job starts), then publish and schedule."""
        if isinstance(self.state.store, FileStore):
            self.state.store.hold()  # StateError while a restore writes the directory
        # Not ready while starting: the first discovery round decides which tenants exist.
        self.readiness.expect([STARTING])
        context = await self._serve()
        self.store.register([BUILD_INFO, *CONFIG_FAMILIES, *SHARD_FAMILIES])
        self.store.put(("", "exporter", "build_info"), build_info_snapshot())
        self.store.put(CONFIG_KEY, config_snapshot(True, self._loaded_at, self.config.digest))
        self.observers.start(self.store)
        # The first discovery round comes before any job, so discovered tenants start with
        # the static ones.
        await self._start_discovery(self.config)
        jobs = self._jobs(self.config)
        await self.collection.add(jobs)
        await self._prune_state(jobs)
        self._warn_unknown_scopes()
        self._started = True
        self.secrets = SecretWatch(
            self.store, lambda: self.config.secret_files, lambda: self.reload("secret file change")
        )
        if schedule:
            self.secrets.start()
            self.collection.scheduler.start()
            if self.discovery is not None:
                self.discovery.start()
        self.readiness.done(STARTING)
        self._log_start(context)
        self.observers.record("start", "process", tenants=self.owned, jobs=len(jobs),
                              shard=f"{self.shard.index}/{self.shard.total}")  # fmt: skip

    async def _start_discovery(self, config: Config) -> None:
        if config.discovery is None or config.discovery_url is None:
            return
        self.store.register(DISCOVERY_FAMILIES)
        self.discovery = Discovery(
            spec=config.discovery,
            url=config.discovery_url,
            validate=tenant_model().model_validate,
            needed=needed_params(config.queries),
            apply=self._apply_discovered,
            publish=lambda snapshot: self.store.put(DISCOVERY_KEY, snapshot),
        )
        await self.discovery.poll()

    async def _apply_discovered(self, entries: list[TenantEntry]) -> str | None:
        """Run with a new set of discovered tenants, exactly as a reload would."""
        async with self._reload_lock:
            try:
                config = parse_config(self.config.raw, self.config.source, entries)
            except ConfigError as exc:
                return "the discovered tenants do not make a valid configuration: " + "; ".join(
                    exc.problems[:5]
                )
            before = self.config.discovered
            self._discovered = entries
            for tenant in set(config.shadowed) - self._shadowed:
                log.info("discovered tenant shadowed by a static one", tenant=tenant)
            self._shadowed |= set(config.shadowed)
            if self._started:
                await self.apply(config)
            else:
                self.config = config
            if set(before) != set(config.discovered):
                changed = auditing.delta(before, config.discovered)
                self.observers.record("tenants discovered", "tenant_discovery", tenants=changed)
            return None

    async def _restart_discovery(self, before: Config) -> None:
        """After a reload: a changed tenant_discovery section starts over."""
        if self.config.discovery == before.discovery and (
            self.config.discovery_url == before.discovery_url
        ):
            return
        if self.discovery is not None:
            await self.discovery.stop()
            self.discovery = None
            self.store.remove(DISCOVERY_KEY)
        await self._start_discovery(self.config)
        if self.discovery is not None:
            self.discovery.start()

    async def _serve(self) -> ssl.SSLContext | None:
        endpoints = Endpoints(
            store=self.store,
            readiness=self.readiness,
            tenants=lambda: self.config.tenants,
            stats=lambda: self.runner.stats,
            jobs=self.runner.jobs,
            policy=lambda: self.policy,
            reload=self.reload if self.settings.enable_reload else None,
            audit=self.observers.audit,
            telemetry_path=self.settings.telemetry_path,
            links=self.links,
            notes=self._notes,
            guard=self.guard,
            exporter_metrics=not self.settings.disable_exporter_metrics,
        )
        self._runner = web.AppRunner(
            make_app(endpoints),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        await self._runner.setup()
        host, port = split_address(self.settings.listen_address)
        tls = self.web_config.tls_server_config
        context = self._ssl = server_context(tls) if tls is not None else None
        try:
            sock = systemd.listening_socket() if self.settings.systemd_socket else None
        except ValueError as exc:
            await self._runner.cleanup()
            raise SocketError(str(exc)) from None
        site = GuardedSite(self._runner, host, port, self.guard, ssl_context=context, sock=sock)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ListenError(self.settings.listen_address, exc) from None
        self.port = site.port
        return context

    def _notes(self) -> dict[str, str]:
        """Operator-only status lines for the landing page."""
        notes = {"Tenant discovery": self.discovery.status()} if self.discovery else {}
        if self.shard.total > 1:
            notes["Shard"] = f"{self.shard.index} of {self.shard.total} ({self.owned} tenants)"
        return notes

    def _log_start(self, context: ssl.SSLContext | None) -> None:
        host, _ = split_address(self.settings.listen_address)
        log.info(
            "exporter started",
            listen=f"{host or '*'}:{self.port}",
            tls=context is not None,
            auth=self.web_config.auth_required,
            tenants=self.owned,
            jobs=len(self.runner.jobs()),
            shard=f"{self.shard.index}/{self.shard.total}",
            max_connections=self.guard.max_connections,
            fd_limit=soft_limit(),
        )
        if self.state.store is None:
            log.info(
                "durable state off",
                hint="run counts and last successes start over after a restart;"
                " set --state.dir (absolute)",
            )
        if context is None or not self.web_config.auth_required:
            log.warning(
                "endpoints not protected",
                tls=context is not None,
                auth=self.web_config.auth_required,
                hint="pass --web.config.file with tls_server_config and credentials",
            )

    async def reload(self, who: str = "SIGHUP") -> list[str]:
        """Re-read the config (and web config) files; keep the old ones if either is bad.

        `who` asked for it (a principal's name, `SIGHUP`): the audit trail says so.
        """
        before = self.config
        problems = await self._reload(who)
        if not problems:
            await self._restart_discovery(before)
        return problems

    async def _reload(self, who: str) -> list[str]:
        async with self._reload_lock:
            try:
                config = self._load_config()
                web = self._load_web_config()
                self._check_web_config(web)
            except ConfigError as exc:
                failed = config_snapshot(False, self._loaded_at, self.config.digest)
                self.store.put(CONFIG_KEY, failed)
                log.error("reload failed", file=exc.source, problems=exc.problems)
                self.observers.record("reload refused", who, file=exc.source,
                                      problems=exc.problems[:20])  # fmt: skip
                return [str(exc)]
            before_tenants, before_web = self.config.tenants, self.web_config
            if web is not None:
                self._apply_web_config(web)
            changes = await self.apply(config) if config is not None else None
            self._warn_unknown_scopes()
            self._record_reload(who, before_tenants, before_web, changes)
            return []

    def _record_reload(
        self, who: str, tenants: tuple[str, ...], web: WebConfig, changes: Diff[Job] | None
    ) -> None:
        details: dict[str, object] = {
            "credentials": auditing.credentials_changed(web, self.web_config)
        }
        if changes is not None:
            details["tenants"] = auditing.tenants_changed(tenants, self.config.tenants, changes)
            details["jobs"] = auditing.jobs_changed(changes)
        self.observers.record("reload", who, **details)

    def _load_config(self) -> Config | None:
        if self.settings.config is None:
            return None
        config = load_config(self.settings.config, self._discovered)
        if config.discovery is None and config.discovered:
            # tenant_discovery was removed: its tenants go with it.
            config = parse_config(config.raw, config.source)
        warn_config(config)
        return config

    def _check_web_config(self, web: WebConfig | None) -> None:
        """Refuse a web config that would widen access or that the listener cannot apply.

        An emptied user list must not open the endpoints, and a reload applies whole or not
        at all: TLS turned on or off, or a client CA dropped, needs a restart.
        """
        if web is None:
            return
        source = str(self.settings.web_config_file or "web config")
        if self.web_config.auth_required and not web.auth_required:
            raise ConfigError(
                source, ["reload would switch authentication off; restart to do that"]
            )
        problem = self._tls_problem(web)
        if problem is not None:
            raise ConfigError(source, [f"tls_server_config: {problem}; nothing was changed"])

    def _tls_problem(self, web: WebConfig) -> str | None:
        tls = web.tls_server_config
        if (tls is None) != (self._ssl is None):
            running, wanted = ("on", "off") if self._ssl is not None else ("off", "on")
            return f"TLS is {running} in the running listener; turning it {wanted} needs a restart"
        if tls is None or self._ssl is None:
            return None
        # A live context can gain CAs, never lose one: refuse rather than keep trusting it.
        trusted = set(self._ssl.get_ca_certs(binary_form=True))
        dropped = trusted - set(server_context(tls).get_ca_certs(binary_form=True))
        if dropped:
            return (
                f"{len(dropped)} client CA certificate(s) the listener trusts are gone;"
                " removing a CA needs a restart"
            )
        return None

    def _apply_web_config(self, web: WebConfig) -> None:
        """New credentials apply at once; new certificates to connections from now on."""
        if web.tls_server_config is not None and self._ssl is not None:
            # Settings loaded into the serving context apply to new handshakes.
            configure(self._ssl, web.tls_server_config)
        self.web_config, self.policy = web, AccessPolicy.of(web)

    def _warn_unknown_scopes(self) -> None:
        """Publish the unknown scoped tenants per token, and name them in the log."""
        for name, ids in self._publish_scopes().items():
            if ids:
                log.warning("scoped tenants not known yet", name=name, tenants=ids)

    def _publish_scopes(self) -> dict[str, list[str]]:
        unknown = unknown_scopes(self.web_config, self.config.tenants)
        self.store.put(SCOPES_KEY, scopes_snapshot(unknown))
        expiries = {
            t.name: t.expires.timestamp()
            for t in self.web_config.bearer_tokens or []
            if t.expires is not None
        }
        self.store.put(EXPIRY_KEY, expiry_snapshot(expiries))
        return unknown

    def _load_web_config(self) -> WebConfig | None:
        path = self.settings.web_config_file
        return load_web_config(path) if path is not None else None

    async def apply(self, config: Config) -> Diff[Job]:
        """Switch to `config`: start new jobs, stop removed ones, keep unchanged snapshots."""
        jobs = self._jobs(config)
        self.runner.set_full(config.limits.self_metrics == "full")
        changes = await self.collection.apply(jobs)
        await self._prune_state(jobs)
        self.config = config
        self._loaded_at = time.time()
        self.store.put(CONFIG_KEY, config_snapshot(True, self._loaded_at, config.digest))
        self._publish_scopes()  # discovered tenants may be what a token was waiting for
        log.info("config reloaded", jobs=changes.summary)
        return changes

    def _jobs(self, config: Config) -> list[Job]:
        """The jobs of `config` this shard owns; publishes the shard and its tenant count."""
        owned = {t for t in config.tenants if self.shard.owns(t)}
        self.owned = len(owned)
        self.store.put(SHARD_KEY, shard_snapshot(self.shard, self.owned))
        return [job for job in all_jobs(config) if job.tenant in owned]

    async def _prune_state(self, jobs: list[Job]) -> None:
        removed = await self.state.prune((j.id for j in jobs), self.settings.state_retention)
        if removed:
            log.info("state of removed jobs deleted", jobs=len(removed))

    async def stop(self) -> None:
        """Stop gracefully: not ready, no new runs, a grace period for running ones, close."""
        self.readiness.stopping()
        if self.secrets is not None:
            await self.secrets.stop()
        if self.discovery is not None:
            await self.discovery.stop()
        await self.collection.stop(self.settings.shutdown_grace_period)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self.state.store is not None:
            await self.state.store.close()
        await self.observers.stop()
        log.info("exporter stopped")


def warn_config(config: Config) -> None:
    """Log what is valid but unwise in a configuration (inline passwords, open secret files)."""
    for warning in config.warnings:
        log.warning("config warning", file=config.source, problem=warning)


async def serve(config: Config, settings: Settings, web_config: WebConfig | None = None) -> int:
    """Run until SIGTERM or SIGINT (a second one exits at once); SIGHUP reloads."""
    raise_limit()  # before the exporter sizes its connection cap by it
    exporter = Exporter(config, settings, web_config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(AcceptErrors())

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
    try:
        await exporter.start()
    except (ListenError, StateError) as exc:
        return fail(str(exc))
    trimmer = loop.create_task(trim_periodically())
    await stop.wait()
    trimmer.cancel()
    log.info("shutting down", grace_seconds=settings.shutdown_grace_period)
    await exporter.stop()
    report_left_out()  # the server is closed: no line can be left out after this
    return 0
