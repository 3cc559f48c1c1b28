"""Who may call what: rate limit, client certificate SANs, credentials, response headers.

The web config's access rules as aiohttp middlewares; health checks are exempt from
credentials only.
"""

import ipaddress
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from exporter.auth import ANONYMOUS, Authenticator, Principal, decode_basic
from exporter.hashing import BusyError, HashQueue
from exporter.limits import FAILURE_WINDOW, FailureLimiter, TokenBucket, client_key
from exporter.logs import Sampled
from exporter.webconfig import WebConfig

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
PRINCIPAL = web.RequestKey("principal", Principal)
# What Python's getpeercert() calls each SAN type; Go compares all four kinds.
_SAN_TYPES = frozenset({"DNS", "IP Address", "email", "URI"})


def _san(value: str) -> str:
    """A SAN value in one spelling: IP addresses normalised, others as given."""
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value


@dataclass(frozen=True)
class AccessPolicy:
    """What one load of the web config says about callers; replaced whole on reload."""

    config: WebConfig
    authenticator: Authenticator
    bucket: TokenBucket | None
    allowed_sans: frozenset[str] | None

    @classmethod
    def of(cls, config: WebConfig) -> "AccessPolicy":
        """The policy for a web config."""
        limit, tls = config.rate_limit, config.tls_server_config
        sans = tls.client_allowed_sans if tls is not None else None
        return cls(
            config=config,
            authenticator=Authenticator(config),
            bucket=TokenBucket(limit.interval, limit.burst) if limit and limit.interval else None,
            allowed_sans=None if sans is None else frozenset(_san(s) for s in sans),
        )

    def san_allowed(self, peercert: object) -> bool:
        """Whether a client certificate (as getpeercert() gives it) carries an allowed SAN."""
        if self.allowed_sans is None:
            return True
        if not isinstance(peercert, dict):
            return False  # no verified certificate at all
        entries: Iterable[tuple[str, str]] = peercert.get("subjectAltName", ())
        return any(kind in _SAN_TYPES and _san(v) in self.allowed_sans for kind, v in entries)


def principal_of(request: web.Request) -> Principal:
    """The caller the auth middleware identified."""
    principal = request.get(PRINCIPAL)
    return principal if isinstance(principal, Principal) else ANONYMOUS


def route_of(request: web.Request) -> str:
    """The matched route's path, never the raw request path (callers choose that freely)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def install(app: web.Application, policy: Callable[[], AccessPolicy]) -> None:
    """Add the access middlewares and the response-header hook to `app`."""
    app.middlewares.extend([_rate_limit(policy), _client_sans(policy), _credentials(policy)])

    async def headers(_: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(policy().config.http_server_config.headers)

    app.on_response_prepare.append(headers)


def _rate_limit(policy: Callable[[], AccessPolicy]) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        bucket = policy().bucket
        if bucket is not None and not bucket.allow():
            raise web.HTTPTooManyRequests(text="rate limit exceeded\n")
        return await handler(request)

    return check


def _client_sans(policy: Callable[[], AccessPolicy]) -> Middleware:
    sampled = Sampled("client certificate refused")

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        current = policy()
        if current.allowed_sans is not None:
            transport = request.transport
            peercert = transport.get_extra_info("peercert") if transport is not None else None
            if not current.san_allowed(peercert):
                left_out = sampled.allow("san")
                if left_out is not None:
                    log.warning("client certificate refused", client=request.remote,
                                suppressed=left_out)  # fmt: skip
                raise web.HTTPForbidden(text="client certificate not allowed\n")
        return await handler(request)

    return check


def _credentials(policy: Callable[[], AccessPolicy]) -> Middleware:
    limiter, queue = FailureLimiter(), HashQueue()
    sampled = Sampled("authentication failed or client blocked")

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = policy().authenticator
        if request.path in PUBLIC_PATHS or not auth.required:
            return await handler(request)
        client = client_key(request.remote)
        wait = limiter.blocked_for(client)
        if wait:
            raise web.HTTPTooManyRequests(headers={"Retry-After": str(math.ceil(wait))})
        header = request.headers.get("Authorization")
        principal = None
        schedule = partial(queue.run, limiter.score(client))
        limiter.begin(client)
        try:
            principal = await auth.authenticate(header, schedule)
        except BusyError:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "1"}) from None
        finally:
            blocked = limiter.end(client, failed=principal is None)
        if principal is None:
            _refused(request, client, header, blocked, sampled)
            challenge = {"WWW-Authenticate": 'Basic realm="cockpit-exporter"'}
            raise web.HTTPUnauthorized(headers=challenge if auth.offers_basic else None)
        request[PRINCIPAL] = principal
        return await handler(request)

    return check


def _refused(
    request: web.Request, client: str, header: str | None, blocked: bool, sampled: Sampled
) -> None:
    """Log a refusal, at most one line a second per reason (with how many were left out)."""
    reason = refusal_reason(header)
    left_out = sampled.allow(reason)
    if left_out is not None:
        log.warning(
            "authentication failed",
            reason=reason,
            client=client,
            path=route_of(request),
            scheme=scheme_of(header),
            suppressed=left_out,
        )
    left_out = sampled.allow("blocked") if blocked else None
    if left_out is not None:
        log.warning("client blocked", client=client, seconds=FAILURE_WINDOW, suppressed=left_out)


def refusal_reason(header: str | None) -> str:
    """Why a credential was refused, in one of three words: missing, malformed, wrong."""
    scheme = scheme_of(header)
    if scheme == "none":
        return "missing"
    credential = (header or "").partition(" ")[2].strip()
    if scheme == "other" or (scheme == "basic" and decode_basic(credential) is None):
        return "malformed"
    return "wrong"


def scheme_of(header: str | None) -> str:
    """The credential's scheme for logs: a fixed word, never text the caller chose."""
    if not header:
        return "none"
    scheme = header.partition(" ")[0].lower()
    return scheme if scheme in ("basic", "bearer") else "other"
