"""The simulator's HTTP API: OAuth2 token endpoint, the platform API per tenant, and admin."""

import asyncio
import hashlib
import json
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from exporter.simulator.faults import Faults
from exporter.simulator.world import WARM_UP, Agent, Run, Schedule, World, build_world

MAX_PAGE = 500
DEFAULT_PAGE = 100
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger(__name__)
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
TRACEPARENTS_KEPT = 256


@dataclass
class SimTenant:
    """A simulated tenant: its world, credentials, tokens and faults."""

    id: str
    client_id: str
    client_secret: str
    world: World
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, float] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    requests: int = 0


class Simulator:
    """N tenants on one clock; `speed` > 1 runs platform time faster than wall time."""

    def __init__(
        self,
        tenant_ids: list[str],
        seed: int,
        speed: float = 1.0,
        clock: Callable[[], float] | None = None,
        warm_up: float = WARM_UP,
        *,
        client_secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.seed, self.speed = seed, speed
        self._wall_start = time.time()
        # Tests drive platform time by hand through `clock`.
        self._clock = clock
        self._frozen: float | None = None
        self._skipped = 0.0
        self.tenants: dict[str, SimTenant] = {}
        for tenant_id in tenant_ids:
            # Derived from the seed unless given: a demo needs none, a shared stack its own.
            derived = hashlib.sha256(f"{seed}/{tenant_id}/secret".encode()).hexdigest()[:32]
            secret = (client_secrets or {}).get(tenant_id, derived)
            world = build_world(tenant_id, seed, self.now(), warm_up)
            rng = random.Random(f"{seed}/{tenant_id}/faults")
            self.tenants[tenant_id] = SimTenant(tenant_id, tenant_id, secret, world, rng=rng)
        self._by_client = {t.client_id: t for t in self.tenants.values()}
        # W3C trace context of the latest requests, as a platform joining traces would see it.
        self.traceparents: deque[dict[str, str]] = deque(maxlen=TRACEPARENTS_KEPT)

    def now(self) -> float:
        """Platform time (held still while frozen)."""
        if self._clock is not None:
            return self._clock()
        return self._frozen if self._frozen is not None else self.now_unfrozen()

    async def set_clock(self, request: web.Request) -> web.Response:
        """Freeze or resume platform time: `{"frozen": true}` (a soak compares counts)."""
        body = await request.json()
        if body.get("frozen") and self._frozen is None:
            self._frozen = self.now()
        elif not body.get("frozen") and self._frozen is not None:
            # Resume where time stood: the frozen stretch never happened on the platform.
            self._skipped += self._frozen - self.now_unfrozen()
            self._frozen = None
        return web.json_response({"frozen": self._frozen is not None, "now": self.now()})

    def now_unfrozen(self) -> float:
        """Platform time as if it had never been frozen."""
        return self._wall_start + self._skipped + (time.time() - self._wall_start) * self.speed

    def world(self, tenant: SimTenant) -> World:
        """The tenant's world, advanced to now."""
        tenant.world.offline_pool = tenant.faults.offline_pool
        tenant.world.advance(self.now())
        return tenant.world

    def app(self) -> web.Application:
        """The aiohttp application serving every tenant."""
        app = web.Application(middlewares=[self._trace_context])
        app.router.add_post("/oauth/token", self.token)
        for endpoint in ("agents", "processes", "schedules", "runs"):
            app.router.add_get(f"/t/{{tenant}}/api/v1/{endpoint}", self._api(endpoint))
        app.router.add_get("/admin/tenants/{tenant}/faults", self.get_faults)
        app.router.add_post("/admin/tenants/{tenant}/faults", self.set_faults)
        app.router.add_delete("/admin/tenants/{tenant}/faults", self.clear_faults)
        app.router.add_get("/admin/tenants/{tenant}/stats", self.stats)
        app.router.add_post("/admin/clock", self.set_clock)
        app.router.add_get("/admin/traceparents", self.get_traceparents)
        return app

    @web.middleware
    async def _trace_context(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Accept a W3C `traceparent` (a malformed one is ignored, as the spec asks) and log it."""
        header = request.headers.get("traceparent")
        if header is not None and TRACEPARENT.fullmatch(header):
            self.traceparents.append({"path": request.path, "traceparent": header})
            log.debug("platform request", path=request.path, traceparent=header)
        return await handler(request)

    async def get_traceparents(self, _: web.Request) -> web.Response:
        """The trace context of the latest requests that carried one, oldest first."""
        return web.json_response(list(self.traceparents))

    async def token(self, request: web.Request) -> web.Response:
        """OAuth2 client credentials grant."""
        form = await request.post()
        tenant = self._by_client.get(str(form.get("client_id", "")))
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if tenant is None or not secrets.compare_digest(
            str(form.get("client_secret", "")), tenant.client_secret
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        if tenant.faults.token_down:
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        token = secrets.token_urlsafe(24)
        ttl = tenant.faults.token_ttl
        tenant.tokens = {t: e for t, e in tenant.tokens.items() if e > time.time()}
        tenant.tokens[token] = time.time() + ttl
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl})

    def _api(self, endpoint: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            tenant = self._tenant(request)
            tenant.requests += 1
            self._authorize(tenant, request)
            faults = tenant.faults
            if faults.latency:
                await asyncio.sleep(faults.latency)
            failure = self._failure(tenant)
            if failure is not None:
                return failure
            body = self._page(tenant, endpoint, request)
            if tenant.rng.random() < faults.malformed_rate:
                return web.Response(
                    text=_malformed(tenant.rng, body), content_type="application/json"
                )
            return web.json_response(body)

        return handle

    def _tenant(self, request: web.Request) -> SimTenant:
        tenant = self.tenants.get(request.match_info["tenant"])
        if tenant is None:
            raise web.HTTPNotFound(text="no such tenant")
        return tenant

    @staticmethod
    def _authorize(tenant: SimTenant, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        expires = tenant.tokens.get(token)
        if not header.startswith("Bearer ") or expires is None or expires <= time.time():
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "invalid_token"}), content_type="application/json"
            )

    @staticmethod
    def _failure(tenant: SimTenant) -> web.Response | None:
        faults = tenant.faults
        retry = {"Retry-After": str(faults.retry_after)}
        if faults.down:
            return web.json_response({"error": "unavailable"}, status=503)
        if tenant.rng.random() < faults.rate_limit_rate:
            return web.json_response({"error": "rate limited"}, status=429, headers=retry)
        if tenant.rng.random() < faults.error_rate:
            return web.json_response({"error": "unavailable"}, status=503, headers=retry)
        return None

    def _page(self, tenant: SimTenant, endpoint: str, request: web.Request) -> dict[str, Any]:
        world = self.world(tenant)
        limit = _int(request.query.get("limit"), DEFAULT_PAGE, 1, MAX_PAGE)
        if tenant.faults.page_size:
            limit = min(limit, tenant.faults.page_size)
        position = _int(request.query.get("page_token"), 0, 0, 2**62)
        if endpoint == "runs":
            since = _parse_time(request.query.get("updated_since"))
            runs, token = world.runs_since(since, position, limit)
            return {"items": [_run(r) for r in runs], "next_page_token": _token(token)}
        items = _listing(world, endpoint)
        chunk = items[position : position + limit]
        more = position + limit < len(items)
        return {"items": chunk, "next_page_token": _token(position + limit if more else None)}

    async def get_faults(self, request: web.Request) -> web.Response:
        """Current faults of a tenant."""
        return web.json_response(self._tenant(request).faults.model_dump())

    async def set_faults(self, request: web.Request) -> web.Response:
        """Switch faults on: the body's fields replace the current ones."""
        tenant = self._tenant(request)
        try:
            update = await request.json()
            tenant.faults = Faults.model_validate(tenant.faults.model_dump() | dict(update))
        except (ValueError, TypeError, ValidationError) as exc:
            raise web.HTTPBadRequest(text=f"invalid faults: {exc}") from None
        return web.json_response(tenant.faults.model_dump())

    async def clear_faults(self, request: web.Request) -> web.Response:
        """Switch every fault off."""
        tenant = self._tenant(request)
        tenant.faults = Faults()
        return web.json_response(tenant.faults.model_dump())

    async def stats(self, request: web.Request) -> web.Response:
        """The simulator's own counts, to check the exporter against."""
        tenant = self._tenant(request)
        world = self.world(tenant)
        names = {p.id: p.name for p in world.processes}
        finished = [
            {"process": names[p], "status": s, "count": n}
            for (p, s), n in sorted(world.finished.items())
        ]
        return web.json_response(
            {"finished": finished, "requests": tenant.requests, "clock": world.clock}
        )


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    try:
        return min(max(int(raw), low), high)
    except ValueError:
        raise web.HTTPBadRequest(text=f"not an integer: {raw[:40]!r}") from None


def _parse_time(raw: str | None) -> float:
    if raw is None:
        return 0.0
    from datetime import datetime  # noqa: PLC0415 - only the runs endpoint parses times

    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise web.HTTPBadRequest(text="updated_since must be RFC 3339") from None


def _token(position: int | None) -> str | None:
    return None if position is None else str(position)


def rfc3339(timestamp: float | None) -> str | None:
    """Platform time format: RFC 3339 in UTC with a Z."""
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _listing(world: World, endpoint: str) -> list[dict[str, Any]]:
    if endpoint == "agents":
        return [_agent(a) for a in world.agents]
    if endpoint == "processes":
        return [{"id": p.id, "name": p.name, "enabled": p.enabled} for p in world.processes]
    return [_schedule(s) for s in world.schedules]


def _agent(agent: Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "pool": agent.pool,
        "status": agent.status,
        "last_heartbeat_at": rfc3339(agent.last_heartbeat_at),
        "version": agent.version,
    }


def _schedule(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "name": schedule.name,
        "process_id": schedule.process_id,
        "cron": schedule.cron,
        "enabled": schedule.enabled,
        "next_run_at": rfc3339(schedule.next_run_at),
        "last_run_at": rfc3339(schedule.last_run_at),
        "last_run_status": schedule.last_run_status,
    }


def _run(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "process_id": run.process_id,
        "schedule_id": run.schedule_id,
        "agent_id": run.agent_id,
        "status": run.status,
        "queued_at": rfc3339(run.queued_at),
        "started_at": rfc3339(run.started_at),
        "finished_at": rfc3339(run.finished_at),
        "updated_at": rfc3339(run.updated_at),
    }


def _malformed(rng: random.Random, body: dict[str, Any]) -> str:
    """A body that is not the documented JSON: truncated, or the wrong shape."""
    text = json.dumps(body)
    if rng.random() < 0.5:
        return text[: max(1, len(text) // 2)]
    return json.dumps({"data": body["items"]})
