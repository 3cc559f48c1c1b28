"""The http_json source: GET a JSON API (paged, authenticated), map it to metrics by JSONPath."""

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import partial
from typing import Any
from urllib.parse import urljoin

import aiohttp

from exporter.errors import CollectionError
from exporter.exposition import SCHEDULED_NOTE, Family
from exporter.sources.base import Job, Part, Resources
from exporter.sources.http import Caller, ClientCredentials, UnauthorizedError, origin
from exporter.sources.http_json.config import KIND, Spec
from exporter.sources.http_json.extract import extract
from exporter.sources.http_json.paths import find

MAX_PAGES = 1000
REASONS = ("timeout", "connect", "http", "auth", "decode", "too_large", "value")


class _Uncounted:
    """Request counts are not exported for this source; the job's self-metrics cover it."""

    def request(self, endpoint: str, code: str, seconds: float) -> None:
        """Nothing to count."""

    def retried(self, endpoint: str) -> None:
        """Nothing to count."""

    def token(self, ok: bool) -> None:
        """Nothing to count."""


class _Client:
    """One endpoint's requests: credentials, pagination, the shared retry logic."""

    def __init__(self, session: aiohttp.ClientSession, job: Job) -> None:
        self.name, self.spec = job.name, _spec(job)
        self.caller = Caller(
            session,
            job.timeout,
            _Uncounted(),
            follow_redirects=self.spec.follow_redirects,
            max_bytes=self.spec.max_response_bytes,
        )
        creds = self.spec.credentials
        self.oauth = None
        if creds is not None and creds.kind == "oauth2":
            self.oauth = ClientCredentials(
                creds.token_url, creds.client_id, creds.secret, creds.scope
            )

    async def pages(self, deadline: float) -> list[object]:
        """Every page, following next_url or the cursor until there is none."""
        url, params, pages = self.spec.url, dict[str, str](), []
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for _ in range(MAX_PAGES):
            seen.add((url, tuple(sorted(params.items()))))
            body = await self.get(url, params, deadline)
            pages.append(body)
            following = self._next(url, params, body)
            if following is None:
                return pages
            url, params = following
            if (url, tuple(sorted(params.items()))) in seen:
                raise CollectionError(
                    "decode", f"{self.name}: the next page repeats; pagination loops"
                )
        raise CollectionError("decode", f"{self.name}: more than {MAX_PAGES} pages")

    def _next(
        self, url: str, params: dict[str, str], body: object
    ) -> tuple[str, dict[str, str]] | None:
        pagination = self.spec.pagination
        if pagination is None:
            return None
        if pagination.cursor is not None:
            value = _first(pagination.cursor.path, body)
            if value in (None, "") or isinstance(value, dict | list | bool):
                return None
            return url, params | {pagination.cursor.param: str(value)}
        value = _first(pagination.next_url or "$", body)
        if not isinstance(value, str) or not value:
            return None
        following = urljoin(url, value)
        if origin(following) != origin(self.spec.url):
            # Credentials go only where the config sends them, not where a body points.
            raise CollectionError("decode", f"{self.name}: next page is on another host")
        return following, {}

    async def get(self, url: str, params: dict[str, str], deadline: float) -> object:
        """One page with retries; with OAuth2, one fresh token on a 401."""
        call = partial(self._once, url, params, deadline)
        try:
            return await self.caller.retrying(self.name, deadline, call)
        except UnauthorizedError:
            if self.oauth is None:
                raise CollectionError(
                    "auth", f"{self.name}: HTTP 401, credentials refused"
                ) from None
            self.oauth.forget()
        try:
            return await self.caller.retrying(self.name, deadline, call)
        except UnauthorizedError:
            raise CollectionError("auth", f"{self.name}: HTTP 401 even with a new token") from None

    async def _once(self, url: str, params: dict[str, str], deadline: float) -> object:
        headers = dict(self.spec.headers)
        creds = self.spec.credentials
        if self.oauth is not None:
            headers["Authorization"] = f"Bearer {await self.oauth.token(self.caller, deadline)}"
        elif creds is not None and creds.kind == "bearer":
            headers["Authorization"] = f"Bearer {creds.secret}"
        elif creds is not None:
            pair = f"{creds.username}:{creds.secret}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
        return await self.caller.json(
            self.name, "GET", url, deadline, params=params, headers=headers
        )


class HttpJsonSource:
    """Any JSON API as metrics, per tenant, without code."""

    kind = KIND
    reasons: tuple[str, ...] = REASONS
    crash_reason = "decode"
    skips_rows = True

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._clients: dict[str, _Client] = {}

    def families(self, jobs: Sequence[Job]) -> Iterable[Family]:
        """The configured metrics of these endpoints."""
        return families(jobs)

    def parts(self, job: Job) -> tuple[str, ...]:
        """An endpoint's one part is the endpoint itself."""
        return (job.name,)

    def open(self, job: Job) -> None:
        """A client for the endpoint (a changed endpoint gets a new one: new credentials)."""
        self._clients[job.id] = _Client(self._resources.http(), job)

    def close(self, job: Job) -> None:
        """Forget the endpoint's client and token."""
        self._clients.pop(job.id, None)

    async def collect(self, job: Job, deadline: float) -> AsyncIterator[Part]:
        """Fetch every page, then map them to series."""
        pages = await self._clients[job.id].pages(deadline)
        spec = _spec(job)
        # JSONPath is pure Python: over a large answer it would hold the event loop for
        # seconds; in a thread, the interpreter hands the loop its turns.
        rendered = await asyncio.to_thread(
            extract, job.tenant, spec.metrics, pages, spec.max_series
        )
        yield rendered.part(job.name)

    async def retain(self, jobs: Sequence[Job]) -> None:
        """Nothing shared to free."""

    async def aclose(self) -> None:
        """Nothing to close: the process closes the HTTP session."""


def families(jobs: Sequence[Job]) -> list[Family]:
    """The families http_json jobs export (also checked for clashes when the config loads)."""
    return [
        Family(m.name, m.type, m.help.rstrip() + SCHEDULED_NOTE)
        for job in jobs
        for m in _spec(job).metrics
    ]


def _spec(job: Job) -> Spec:
    spec: Spec = job.spec
    return spec


def _first(path: str, body: object) -> Any:
    found = find(path, body)
    return found[0] if found else None
