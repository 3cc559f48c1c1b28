"""HTTP access to one tenant's platform API: tokens, retries, pagination, request metrics."""

import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from exporter.config import PlatformSpec
from exporter.errors import CollectionError
from exporter.exposition import escape_label_value, format_value
from exporter.sources.platform import families
from exporter.sources.platform.models import parse_page

T = TypeVar("T")
ENDPOINTS = ("token", "processes", "agents", "schedules", "runs")
MAX_PAGES = 10_000
# Refresh this long before expiry (at most a tenth of the lifetime), so no call races it.
REFRESH_MARGIN = 30.0
_backoff = wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5)


class _StatusError(Exception):
    """An HTTP error status, with the server's Retry-After if it sent one."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _UnauthorizedError(Exception):
    """The API refused the token."""


@dataclass
class ClientStats:
    """Request counters of one tenant's client, rendered as self-metrics."""

    tenant: str
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    timed: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    token_refreshes: int = 0
    token_failures: int = 0

    def request(self, endpoint: str, code: str, seconds: float) -> None:
        """Count one request."""
        self.requests[(endpoint, code)] += 1
        self.seconds[endpoint] += seconds
        self.timed[endpoint] += 1

    def render(self) -> dict[str, bytes]:
        """Sample lines of the client families."""
        t = f'tenant="{escape_label_value(self.tenant)}"'
        requests = "".join(
            f'{families.REQUESTS.name}{{{t},endpoint="{e}",code="{c}"}} {n}\n'
            for (e, c), n in sorted(self.requests.items())
        )
        duration = "".join(
            f'{families.REQUEST_DURATION.name}_sum{{{t},endpoint="{e}"}} '
            f"{format_value(self.seconds[e])}\n"
            f'{families.REQUEST_DURATION.name}_count{{{t},endpoint="{e}"}} {self.timed[e]}\n'
            for e in ENDPOINTS
        )
        retries = "".join(
            f'{families.RETRIES.name}{{{t},endpoint="{e}"}} {self.retries[e]}\n' for e in ENDPOINTS
        )
        return {
            families.REQUESTS.name: requests.encode(),
            families.REQUEST_DURATION.name: duration.encode(),
            families.RETRIES.name: retries.encode(),
            families.TOKEN_REFRESHES.name: (
                f"{families.TOKEN_REFRESHES.name}{{{t}}} {self.token_refreshes}\n".encode()
            ),
            families.TOKEN_FAILURES.name: (
                f"{families.TOKEN_FAILURES.name}{{{t}}} {self.token_failures}\n".encode()
            ),
        }


class TenantClient:
    """Calls one tenant's API through the process-wide session; never raises but CollectionError."""

    def __init__(
        self, session: aiohttp.ClientSession, spec: PlatformSpec, stats: ClientStats | None = None
    ) -> None:
        self._session = session
        self._spec = spec
        self.stats = stats or ClientStats(spec.tenant)
        self._token: str | None = None
        self._refresh_at = 0.0

    async def fetch_all(
        self, endpoint: str, params: dict[str, str], deadline: float
    ) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query = params | {"limit": str(self._spec.page_size)}
            if token is not None:
                query["page_token"] = token
            page = parse_page(endpoint, await self.get(endpoint, query, deadline))
            items.extend(page.items)
            if page.next_page_token is None:
                return items
            if page.next_page_token in seen:
                raise CollectionError("decode", f"{endpoint}: page token repeats; pagination loops")
            token = page.next_page_token
            seen.add(token)
        raise CollectionError("decode", f"{endpoint}: more than {MAX_PAGES} pages")

    async def get(self, endpoint: str, query: dict[str, str], deadline: float) -> object:
        """GET `{base_url}/api/v1/{endpoint}` with retries; one fresh token on a 401."""
        url = f"{self._spec.base_url}/api/v1/{endpoint}"
        call = partial(self._get_once, endpoint, url, query, deadline)
        try:
            return await self._retrying(endpoint, deadline, call)
        except _UnauthorizedError:
            self._token = None
        try:
            return await self._retrying(endpoint, deadline, call)
        except _UnauthorizedError:
            raise CollectionError("auth", f"{endpoint}: HTTP 401 even with a new token") from None

    async def _get_once(
        self, endpoint: str, url: str, query: dict[str, str], deadline: float
    ) -> object:
        headers = {"Authorization": f"Bearer {await self._access_token(deadline)}"}
        body = await self._send(endpoint, self._session.get(
            url, params=query, headers=headers, timeout=self._timeout(deadline)
        ))  # fmt: skip
        return _json(endpoint, body)

    async def _send(self, endpoint: str, request: Any) -> bytes:
        """Perform one request, count it, and turn error statuses into exceptions."""
        started, code = time.monotonic(), "error"
        try:
            async with request as response:
                code = str(response.status)
                if response.status == 401:
                    raise _UnauthorizedError
                if response.status >= 400:
                    raise _StatusError(response.status, _retry_after(response.headers))
                return bytes(await response.read())
        finally:
            self.stats.request(endpoint, code, time.monotonic() - started)

    def _timeout(self, deadline: float) -> aiohttp.ClientTimeout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return aiohttp.ClientTimeout(total=min(self._spec.request_timeout, remaining))

    async def _access_token(self, deadline: float) -> str:
        if self._token is not None and time.monotonic() < self._refresh_at:
            return self._token
        try:
            token, ttl = await self._retrying(
                "token", deadline, lambda: self._fetch_token(deadline)
            )
        except CollectionError as exc:
            self.stats.token_failures += 1
            raise CollectionError("auth", str(exc)) from None
        self.stats.token_refreshes += 1
        self._token = token
        self._refresh_at = time.monotonic() + ttl - min(REFRESH_MARGIN, ttl / 10)
        return token

    async def _fetch_token(self, deadline: float) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "client_id": self._spec.client_id,
            "client_secret": self._spec.client_secret,
        }
        if self._spec.scope:
            form["scope"] = self._spec.scope
        request = self._session.post(
            self._spec.token_url, data=form, timeout=self._timeout(deadline)
        )
        try:
            body = _json("token", await self._send("token", request))
        except _UnauthorizedError:
            raise CollectionError("auth", "token: HTTP 401, client id or secret refused") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise CollectionError("decode", "token: response has no access_token")
        ttl = body.get("expires_in", 300)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
            raise CollectionError("decode", "token: expires_in is not a positive number")
        return body["access_token"], float(ttl)

    async def _retrying(
        self, endpoint: str, deadline: float, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `call`, retrying transient failures with backoff until the poll deadline."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=_wait,
            stop=stop_before_delay(max(0.0, deadline - time.monotonic())),
            before_sleep=lambda _: self.stats.retries.update([endpoint]),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await call()
        except (CollectionError, _UnauthorizedError):
            raise
        except _StatusError as exc:
            raise CollectionError("http", f"{endpoint}: {exc}") from None
        except TimeoutError:
            raise CollectionError("timeout", f"{endpoint}: no answer within the deadline") from None
        except aiohttp.ClientError as exc:
            raise CollectionError("connect", f"{endpoint}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _StatusError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, TimeoutError | aiohttp.ClientConnectionError)


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _StatusError) and exc.retry_after is not None:
        return exc.retry_after
    return float(_backoff(state))


def _retry_after(headers: Any) -> float | None:
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


def _json(endpoint: str, body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError:
        raise CollectionError("decode", f"{endpoint}: response body is not JSON") from None
