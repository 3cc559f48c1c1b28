"""HTTP for every source that polls an API, shared so no source copies it.

Retries with backoff and Retry-After until the deadline, error statuses classified, OAuth2
client-credentials tokens cached and refreshed. No redirect is followed unless a source asks
for same-origin ones, so credentials only ever reach the host they were configured for, and
every answer is read within the size limit (bounded.py).

Errors leave as CollectionError with reason `http`, `timeout`, `connect`, `auth`, `decode`
or `too_large`.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from opentelemetry.trace import Span, SpanKind, StatusCode
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from exporter import spans
from exporter.errors import CollectionError
from exporter.sources.base import safe_url
from exporter.sources.bounded import DEFAULT_MAX_BYTES, decode_json, read_body

T = TypeVar("T")
# Refresh this long before expiry (at most a tenth of the lifetime), so no call races it.
REFRESH_MARGIN = 30.0
_backoff = wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5)
# Per-host limit: one platform host serving many tenants gets a bounded number of
# connections; the total bounds sockets across all hosts.
HTTP_LIMIT, HTTP_LIMIT_PER_HOST = 256, 64
MAX_REDIRECTS = 5
# Statuses a client may follow; a POST only with those that keep its method and body.
FOLLOWABLE, KEEP_METHOD = frozenset({301, 302, 303, 307, 308}), frozenset({307, 308})


def new_session() -> aiohttp.ClientSession:
    """The HTTP client the sources share.

    No cookie jar: tenants share the session, and a cookie one API sets must not travel
    with another tenant's requests.
    """
    connector = aiohttp.TCPConnector(limit=HTTP_LIMIT, limit_per_host=HTTP_LIMIT_PER_HOST)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port: what a redirect or a next page must keep."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class Counts(Protocol):
    """Where a client counts its requests, retries and token fetches."""

    def request(self, endpoint: str, code: str, seconds: float) -> None:
        """Count one request."""
        ...

    def retried(self, endpoint: str) -> None:
        """Count one retry."""
        ...

    def token(self, ok: bool) -> None:
        """Count one token fetch, successful or not."""
        ...


class StatusError(Exception):
    """An HTTP error status, with the server's Retry-After if it sent one."""

    def __init__(self, status: int, retry_after: float | None, url: str = "") -> None:
        # The URL (without query or credentials) tells a wrong base_url from a wrong path.
        super().__init__(f"HTTP {status} from {url}" if url else f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class UnauthorizedError(Exception):
    """The API refused the credential."""


@dataclass
class Caller:
    """Sends requests through the shared session, counting each and retrying transient ones."""

    session: aiohttp.ClientSession
    request_timeout: float
    counts: Counts
    follow_redirects: bool = False  # same-origin ones only, and only when configured
    max_bytes: int = DEFAULT_MAX_BYTES
    # The server's Retry-After, remembered across polls: no request before this
    # (time.monotonic()), so a rate-limited tenant is paced instead of hammering.
    not_before: float = 0.0

    async def json(
        self, endpoint: str, method: str, url: str, deadline: float, **options: Any
    ) -> object:
        """`send`, then the body decoded as JSON within the value bound."""
        body = await self.send(endpoint, method, url, deadline, **options)
        return decode_json(endpoint, body, self.max_bytes)

    async def send(
        self, endpoint: str, method: str, url: str, deadline: float, **options: Any
    ) -> bytes:
        """Perform one request (and same-origin redirects, if allowed); count each hop."""
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            began, code = time.monotonic(), "error"
            with _client_span(method, url) as span:
                headers = options["headers"] = dict(options.get("headers") or {})
                spans.inject(headers)  # W3C traceparent: the platform's traces join ours
                try:
                    async with self.session.request(
                        method, url, allow_redirects=False, timeout=self.timeout(deadline),
                        **options,
                    ) as response:  # fmt: skip
                        code = str(response.status)
                        _answered(span, response.status)
                        target = self._redirect(endpoint, method, first, response)
                        if target is None:
                            return await self._body(endpoint, response)
                finally:
                    self.counts.request(endpoint, code, time.monotonic() - began)
            url = target
            options.pop("params", None)  # the Location carries its own query
        raise CollectionError("http", f"{endpoint}: more than {MAX_REDIRECTS} redirects")

    def _redirect(
        self,
        endpoint: str,
        method: str,
        first: str,
        response: aiohttp.ClientResponse,
    ) -> str | None:
        """Where a 3xx may be followed to; None for other statuses; else an `http` failure.

        `first` is the URL the request began with: only its origin may be followed to.
        """
        status = response.status
        if not 300 <= status < 400:
            return None
        target = urljoin(str(response.url), response.headers.get("Location", ""))
        same = origin(target) == origin(first)
        refused = _refusal(self.follow_redirects, method, status, same)
        if refused is None:
            return target
        # The host only: a Location's path and query may carry anything.
        host = urlsplit(target).netloc.rpartition("@")[2] or "nowhere"
        raise CollectionError(
            "http", f"{endpoint}: HTTP {status} redirect to {host} not followed ({refused})"
        )

    async def _body(self, endpoint: str, response: aiohttp.ClientResponse) -> bytes:
        """The body of a success; error statuses become exceptions (their bodies unread)."""
        if response.status == 401:
            raise UnauthorizedError
        if response.status >= 400:
            url = safe_url(str(response.url))
            wait = retry_after(response.headers)
            if wait is not None:
                self.not_before = time.monotonic() + wait
            raise StatusError(response.status, wait, url)
        return await read_body(response, self.max_bytes, endpoint)

    def timeout(self, deadline: float) -> aiohttp.ClientTimeout:
        """The request timeout, never past the run's deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return aiohttp.ClientTimeout(total=min(self.request_timeout, remaining))

    async def retrying(self, endpoint: str, deadline: float, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call`, retrying transient failures with backoff until the deadline."""
        statuses: list[StatusError] = []

        def before_sleep(state: RetryCallState) -> None:
            self.counts.retried(endpoint)
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, StatusError):
                statuses.append(exc)
            wait = state.next_action.sleep if state.next_action else 0.0
            span.add_event("retry", {"attempt": state.attempt_number, "wait_seconds": wait,
                                     "error.type": _error_type(exc)})  # fmt: skip

        def retrying() -> AsyncRetrying:
            return AsyncRetrying(
                retry=retry_if_exception(_transient),
                wait=_wait,
                stop=stop_before_delay(max(0.0, deadline - time.monotonic())),
                before_sleep=before_sleep,
                reraise=True,
            )

        with spans.span(
            f"call {endpoint}", attributes={"cockpit.endpoint": endpoint}, record_exception=False
        ) as span:
            return await self._attempts(endpoint, deadline, call, retrying, statuses)
        raise AssertionError("unreachable: the span re-raises")

    async def _attempts(
        self,
        endpoint: str,
        deadline: float,
        call: Callable[[], Awaitable[T]],
        retrying: Callable[[], AsyncRetrying],
        statuses: list[StatusError],
    ) -> T:
        """The attempts of one call, with every failure turned into a CollectionError.

        The first attempt is made without tenacity, which most calls need no more of: each
        of its retry loops is cyclic garbage (38 objects) only the collector frees, and at
        a thousand tenants that garbage cost a sixth of the process's CPU.
        """
        try:
            await self._paced(endpoint, deadline)
            try:
                return await call()
            except Exception as exc:
                if not _transient(exc):
                    raise
                failed = exc
            return await _retried(retrying(), call, failed)
        except (CollectionError, UnauthorizedError):
            raise
        except StatusError as exc:
            raise CollectionError("http", f"{endpoint}: {exc}") from None
        except TimeoutError:
            if statuses:  # the deadline ran out retrying error statuses: say which
                raise CollectionError("http", f"{endpoint}: {statuses[-1]}") from None
            raise CollectionError("timeout", f"{endpoint}: no answer within the deadline") from None
        except aiohttp.ClientPayloadError:
            # A body cut short or that does not inflate: what arrived is not an answer.
            raise CollectionError("decode", f"{endpoint}: response body is malformed") from None
        except aiohttp.ClientError as exc:
            raise CollectionError("connect", f"{endpoint}: {type(exc).__name__}: {exc}") from None

    async def _paced(self, endpoint: str, deadline: float) -> None:
        """Wait out a Retry-After the server asked for, or fail at once if it ends too late."""
        wait = self.not_before - time.monotonic()
        if wait <= 0:
            return
        if time.monotonic() + wait >= deadline:
            raise CollectionError("http", f"{endpoint}: rate limited for {wait:.1f}s more")
        with spans.span("retry-after wait",
                                                  attributes={"wait_seconds": wait}):  # fmt: skip
            await asyncio.sleep(wait)


@dataclass
class ClientCredentials:
    """An OAuth2 client-credentials token, fetched when needed and refreshed before expiry."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str | None = None
    _token: str | None = field(default=None, repr=False)
    _refresh_at: float = 0.0

    def forget(self) -> None:
        """The API refused the token: fetch a new one next time."""
        self._token = None

    async def token(self, caller: Caller, deadline: float) -> str:
        """A valid access token."""
        if self._token is not None and time.monotonic() < self._refresh_at:
            return self._token
        try:
            token, ttl = await caller.retrying(
                "token", deadline, lambda: self._fetch(caller, deadline)
            )
        except CollectionError as exc:
            caller.counts.token(ok=False)
            raise CollectionError("auth", str(exc)) from None
        caller.counts.token(ok=True)
        self._token = token
        self._refresh_at = time.monotonic() + ttl - min(REFRESH_MARGIN, ttl / 10)
        return token

    async def _fetch(self, caller: Caller, deadline: float) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }
        if self.scope:
            form["scope"] = self.scope
        try:
            body = await caller.json("token", "POST", self.token_url, deadline, data=form)
        except UnauthorizedError:
            raise CollectionError("auth", "token: HTTP 401, client id or secret refused") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise CollectionError("decode", "token: response has no access_token")
        ttl = body.get("expires_in", 300)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
            raise CollectionError("decode", "token: expires_in is not a positive number")
        return body["access_token"], float(ttl)


async def _retried(retrying: AsyncRetrying, call: Callable[[], Awaitable[T]],
                   failed: Exception) -> T:  # fmt: skip
    """`call` under `retrying`, whose first attempt is the failure that already happened.

    Replayed, that failure counts, waits and stops as if tenacity had made the attempt.
    """
    pending = [failed]

    async def attempt_once() -> T:
        if pending:
            raise pending.pop()
        return await call()

    async for attempt in retrying:
        with attempt:
            return await attempt_once()
    raise AssertionError("unreachable: tenacity either returns or raises")


def _client_span(method: str, url: str) -> AbstractContextManager[Span]:
    """A CLIENT span of one HTTP request, with the semantic conventions' attributes."""
    if not spans.on():
        return spans.span(method)
    parts = urlsplit(url)
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.full": safe_url(url),
        "server.address": parts.hostname or "",
    }
    if parts.port is not None:
        attributes["server.port"] = parts.port
    return spans.span(method, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False)


def _answered(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 400:  # the conventions: a client span with a 4xx or 5xx answer failed
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)


def _error_type(exc: BaseException | None) -> str:
    if isinstance(exc, StatusError):
        return str(exc.status)
    return type(exc).__name__ if exc is not None else ""


def _refusal(follow: bool, method: str, status: int, same_origin: bool) -> str | None:
    """Why a redirect is not followed, or None when it may be."""
    if not follow:
        return "follow_redirects: none"
    if status not in FOLLOWABLE:
        return "not a redirect to follow"
    if not same_origin:
        return "follow_redirects: same_origin: another origin"
    if method != "GET" and status not in KEEP_METHOD:
        return f"it would turn the {method} into a GET"
    return None


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, StatusError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, TimeoutError | aiohttp.ClientConnectionError)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, StatusError) and exc.retry_after is not None:
        return exc.retry_after
    return float(_backoff(state))


def retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    raw = headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
