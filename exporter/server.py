"""HTTP endpoints: /metrics, /healthz, /readyz, the landing page and /-/reload, behind auth."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter import access
from exporter.access import AccessPolicy, principal_of, route_of, scheme_of
from exporter.audit import AuditLog
from exporter.auth import ANONYMOUS, decode_basic
from exporter.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    OPENMETRICS_EOF,
    PROMETHEUS_CONTENT_TYPE,
)
from exporter.gzipped import GzipPrefix
from exporter.landing import render_landing
from exporter.listener import Guard, track_requests
from exporter.logs import Sampled
from exporter.readiness import Readiness
from exporter.runtime import RuntimeMetrics
from exporter.selfmetrics import JobStats
from exporter.sources.base import Job
from exporter.store import Exposition, SnapshotStore
from exporter.webconfig import WebConfig

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Large bodies are compressed off the event loop so collection keeps running meanwhile.
_GZIP_INLINE_LIMIT = 256 * 1024
# Answers are written and compressed in pieces of this size: the socket's buffer copies what
# it cannot send at once, and a single 25 MB write was copied twice more.
_WRITE_BLOCK = 256 * 1024


@dataclass(frozen=True)
class Endpoints:
    """What the HTTP layer reads from the running exporter."""

    store: SnapshotStore
    readiness: Readiness
    tenants: Callable[[], Collection[str]]
    stats: Callable[[], Collection[JobStats]]
    jobs: Callable[[], Collection[Job]]
    policy: Callable[[], AccessPolicy]
    reload: Callable[[str], Awaitable[list[str]]] | None = None
    audit: AuditLog | None = None  # refused requests and scoped tokens' first use go there
    telemetry_path: str = "/metrics"
    links: Mapping[str, str] = field(default_factory=dict)
    notes: Callable[[], Mapping[str, str]] = dict  # operator-only status lines (discovery)
    guard: Guard | None = None  # the listener's connection limits, shown as self-metrics
    exporter_metrics: bool = True  # process_*, python_* and the HTTP connection metrics


def wants_openmetrics(accept: str) -> bool:
    """Whether the Accept header asks for OpenMetrics with a non-zero quality."""
    for media_range in accept.split(","):
        media, *params = (p.strip() for p in media_range.split(";"))
        if media.lower() != "application/openmetrics-text":
            continue
        quality = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
        try:
            if float(quality) > 0:
                return True
        except ValueError:
            continue
    return False


def selected_tenants(request: web.Request, known: Collection[str]) -> frozenset[str] | None:
    """Tenants a scrape returns: what ?tenant= asks for, within the caller's scope."""
    wanted = frozenset(request.query.getall("tenant", []))
    scope = principal_of(request).tenants
    if scope is not None:
        # Same answer for unknown and other tenants: a scoped caller learns nothing.
        if wanted - scope:
            raise web.HTTPForbidden(text="tenant not allowed for this credential\n")
        return wanted or scope
    unknown = sorted(wanted - set(known))
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown tenant: {', '.join(unknown)}\n")
    return wanted or None


class MetricsHandler:
    """Serves pre-rendered snapshots plus the process's runtime metrics.

    The unfiltered output is compressed once per change of the store, not per scrape.
    """

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self._runtime = RuntimeMetrics(endpoints.guard) if endpoints.exporter_metrics else None
        self._gzipped: GzipPrefix | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Handle GET on the telemetry path."""
        tenants = selected_tenants(request, self._endpoints.tenants())
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        body = self._endpoints.store.exposition(openmetrics, tenants)
        # Process metrics are the operators': like the config series, not a tenant's.
        runtime = self._runtime if tenants is None else None
        tail = runtime.render(openmetrics) if runtime is not None else b""
        if openmetrics:
            tail += OPENMETRICS_EOF
        headers = {
            "Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else PROMETHEUS_CONTENT_TYPE,
            "Vary": "Accept, Accept-Encoding",
        }
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            prefix = await self._gzip_prefix(body)
            return web.Response(body=prefix.with_tail(tail), headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = body.size + len(tail)
        await response.prepare(request)
        for block in body.blocks(_WRITE_BLOCK):
            await response.write(block)
        await response.write(tail)
        await response.write_eof()
        return response

    async def _gzip_prefix(self, body: Exposition) -> GzipPrefix:
        cached = self._gzipped
        if cached is not None and body.version is not None and cached.version == body.version:
            return cached
        # In blocks, not the store's pieces one by one: 300,000 small calls took twice as
        # long and held the GIL against the event loop between them.
        blocks = body.blocks(_WRITE_BLOCK)
        if body.size < _GZIP_INLINE_LIMIT:
            prefix = GzipPrefix(blocks, body.version)
        else:
            prefix = await asyncio.to_thread(GzipPrefix, blocks, body.version)
        if body.version is not None:  # one tenant's scrape must not evict the whole one's
            self._gzipped = prefix
        return prefix


def make_app(endpoints: Endpoints) -> web.Application:
    """The aiohttp application; small request limit since we accept no bodies."""
    middlewares = [track_requests, _request_log(endpoints)]
    app = web.Application(client_max_size=64 * 1024, middlewares=middlewares)
    access.install(app, endpoints.policy)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if endpoints.readiness.ready:
            return web.Response(text="ready\n")
        pending = endpoints.readiness.pending
        return web.Response(status=503, text=f"not ready: {pending} job(s) pending\n")

    async def landing(request: web.Request) -> web.Response:
        scope = principal_of(request).tenants
        stats = [s for s in endpoints.stats() if scope is None or s.tenant in scope]
        jobs = [j for j in endpoints.jobs() if scope is None or j.tenant in scope]
        # Extra links (the demo's simulator) are for operators only.
        links = endpoints.links if scope is None else {}
        notes = endpoints.notes() if scope is None else {}
        page = render_landing(stats, jobs, endpoints.telemetry_path, links, notes)
        return web.Response(text=page, content_type="text/html")

    app.router.add_get(endpoints.telemetry_path, MetricsHandler(endpoints).handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", landing)
    if endpoints.reload is not None:
        app.router.add_post("/-/reload", _reload_handler(endpoints.reload))
    return app


def _reload_handler(reload: Callable[[str], Awaitable[list[str]]]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        principal = principal_of(request)
        if principal.tenants is not None:
            raise web.HTTPForbidden(text="reload needs a credential for every tenant\n")
        problems = await reload(principal.name)
        if problems:
            return web.Response(status=400, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    return handle


def _request_log(endpoints: Endpoints) -> Middleware:
    """One line per request: successes at debug, errors at info, sampled per status.

    With an audit trail, refusals are counted there per principal, and a scoped token's
    first use is recorded.
    """
    sampled = Sampled("http request")

    @web.middleware
    async def logged(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            _log_request(request, status, time.perf_counter() - started, sampled)
            if endpoints.audit is not None:
                _audit(endpoints.audit, request, status, endpoints.policy().config)

    return logged


def _audit(audit: AuditLog, request: web.Request, status: int, web_config: WebConfig) -> None:
    principal = principal_of(request)
    if status in (401, 403):
        audit.refused(principal.name if principal is not ANONYMOUS else _claimed(
            request.headers.get("Authorization"), web_config), status)  # fmt: skip
    elif principal.tenants is not None and status < 400:
        audit.first_use(principal.name)


def _claimed(header: str | None, web_config: WebConfig) -> str:
    """Who a refused caller claimed to be: a configured user's name, else only the scheme.

    Names nobody configured are the caller's free text: never written, and never a key.
    """
    if scheme_of(header) == "basic":
        basic = decode_basic((header or "").partition(" ")[2].strip())
        if basic is not None and basic.user in (web_config.basic_auth_users or {}):
            return basic.user
    return f"unauthenticated ({scheme_of(header)})"


def _log_request(request: web.Request, status: int, seconds: float, sampled: Sampled) -> None:
    """Successes at debug, errors at info: at most one line a second per status.

    Scrapes every few seconds would drown the log at info; errors any client can cause.
    """
    if status < 400:
        emit, extra = log.debug, {}
    else:
        left_out = sampled.allow(str(status))
        if left_out is None:
            return
        emit, extra = log.info, {"suppressed": left_out}
    emit(
        "http request",
        method=request.method,
        path=route_of(request),
        status=status,
        duration_ms=round(seconds * 1000, 2),
        client=request.remote,
        principal=principal_of(request).name,
        **extra,
    )
