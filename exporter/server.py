"""HTTP endpoints: /metrics, /healthz, /readyz, the landing page and /-/reload, behind auth."""

import asyncio
import gzip
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import structlog
from aiohttp import web

from exporter import access
from exporter.access import AccessPolicy, principal_of, route_of
from exporter.exposition import OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE
from exporter.landing import render_landing
from exporter.readiness import Readiness
from exporter.selfmetrics import JobStats
from exporter.store import SnapshotStore

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Large bodies are compressed off the event loop so collection keeps running meanwhile.
_GZIP_INLINE_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Endpoints:
    """What the HTTP layer reads from the running exporter."""

    store: SnapshotStore
    readiness: Readiness
    tenants: Callable[[], Collection[str]]
    stats: Callable[[], Collection[JobStats]]
    policy: Callable[[], AccessPolicy]
    reload: Callable[[], Awaitable[list[str]]] | None = None


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
    """Serves pre-rendered snapshots; remembers the last gzip of the unfiltered output."""

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self._gzipped: tuple[bytes, bytes] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        """Handle GET /metrics."""
        tenants = selected_tenants(request, self._endpoints.tenants())
        openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
        body = self._endpoints.store.render(openmetrics, tenants)
        headers = {
            "Content-Type": OPENMETRICS_CONTENT_TYPE if openmetrics else PROMETHEUS_CONTENT_TYPE,
            "Vary": "Accept, Accept-Encoding",
        }
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            body = await self._gzip(body)
        return web.Response(body=body, headers=headers)

    async def _gzip(self, body: bytes) -> bytes:
        cached = self._gzipped
        if cached is not None and cached[0] is body:
            return cached[1]
        if len(body) < _GZIP_INLINE_LIMIT:
            compressed = gzip.compress(body, compresslevel=1)
        else:
            compressed = await asyncio.to_thread(gzip.compress, body, 1)
        self._gzipped = (body, compressed)
        return compressed


def make_app(endpoints: Endpoints) -> web.Application:
    """The aiohttp application; small request limit since we accept no bodies."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[_request_log])
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
        return web.Response(text=render_landing(stats), content_type="text/html")

    app.router.add_get("/metrics", MetricsHandler(endpoints).handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/", landing)
    if endpoints.reload is not None:
        app.router.add_post("/-/reload", _reload_handler(endpoints.reload))
    return app


def _reload_handler(reload: Callable[[], Awaitable[list[str]]]) -> Handler:
    async def handle(request: web.Request) -> web.Response:
        if principal_of(request).tenants is not None:
            raise web.HTTPForbidden(text="reload needs a credential for every tenant\n")
        problems = await reload()
        if problems:
            return web.Response(status=400, text="\n".join(problems) + "\n")
        return web.Response(text="reloaded\n")

    return handle


@web.middleware
async def _request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        log.info(
            "http request",
            method=request.method,
            path=route_of(request),
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            client=request.remote,
            principal=principal_of(request).name,
        )


def bound_port(site: web.TCPSite) -> int:
    """The port a site listens on (what port 0 became)."""
    # aiohttp exposes the bound socket only on the underlying server object.
    sockets = getattr(site._server, "sockets", None) or []
    return int(sockets[0].getsockname()[1]) if sockets else 0
