"""HTTP for every source that polls an API, shared so no source copies it.

Retries with backoff and Retry-After until the deadline, error statuses classified, OAuth2
client-credentials tokens cached and refreshed.

Errors leave as CollectionError with reason `http`, `timeout`, `connect`, `auth` or `decode`.
"""

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from exporter.errors import CollectionError
from exporter.sources.base import safe_url

T = TypeVar("T")
# Refresh this long before expiry (at most a tenth of the lifetime), so no call races it.
REFRESH_MARGIN = 30.0
_backoff = wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.5)


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
    # The server's Retry-After, remembered across polls: no request before this
    # (time.monotonic()), so a rate-limited tenant is paced instead of hammering.
    not_before: float = 0.0

    async def send(self, endpoint: str, request: Any) -> bytes:
        """Perform one request, count it, and turn error statuses into exceptions."""
        started, code = time.monotonic(), "error"
        try:
            async with request as response:
                code = str(response.status)
                if response.status == 401:
                    raise UnauthorizedError
                if response.status >= 400:
                    url = safe_url(str(response.url))
                    wait = retry_after(response.headers)
                    if wait is not None:
                        self.not_before = time.monotonic() + wait
                    raise StatusError(response.status, wait, url)
                return bytes(await response.read())
        finally:
            self.counts.request(endpoint, code, time.monotonic() - started)

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

        retrying = AsyncRetrying(
            retry=retry_if_exception(_transient),
            wait=_wait,
            stop=stop_before_delay(max(0.0, deadline - time.monotonic())),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            await self._paced(endpoint, deadline)
            async for attempt in retrying:
                with attempt:
                    return await call()
        except (CollectionError, UnauthorizedError):
            raise
        except StatusError as exc:
            raise CollectionError("http", f"{endpoint}: {exc}") from None
        except TimeoutError:
            if statuses:  # the deadline ran out retrying error statuses: say which
                raise CollectionError("http", f"{endpoint}: {statuses[-1]}") from None
            raise CollectionError("timeout", f"{endpoint}: no answer within the deadline") from None
        except aiohttp.ClientError as exc:
            raise CollectionError("connect", f"{endpoint}: {type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _paced(self, endpoint: str, deadline: float) -> None:
        """Wait out a Retry-After the server asked for, or fail at once if it ends too late."""
        wait = self.not_before - time.monotonic()
        if wait <= 0:
            return
        if time.monotonic() + wait >= deadline:
            raise CollectionError("http", f"{endpoint}: rate limited for {wait:.1f}s more")
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
        request = caller.session.post(self.token_url, data=form, timeout=caller.timeout(deadline))
        try:
            body = decode_json("token", await caller.send("token", request))
        except UnauthorizedError:
            raise CollectionError("auth", "token: HTTP 401, client id or secret refused") from None
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise CollectionError("decode", "token: response has no access_token")
        ttl = body.get("expires_in", 300)
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
            raise CollectionError("decode", "token: expires_in is not a positive number")
        return body["access_token"], float(ttl)


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


def decode_json(endpoint: str, body: bytes) -> object:
    """The body as JSON, or a `decode` failure naming the endpoint (HTML error pages too)."""
    try:
        return json.loads(body)
    except ValueError:
        raise CollectionError("decode", f"{endpoint}: response body is not JSON") from None
