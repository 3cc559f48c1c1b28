"""HTTP access to one tenant's platform API: tokens, retries, pagination, request metrics."""

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp

from exporter.config import PlatformSpec
from exporter.errors import CollectionError
from exporter.exposition import escape_label_value
from exporter.histogram import Histogram
from exporter.sources.http import Caller, ClientCredentials, UnauthorizedError
from exporter.sources.platform import families
from exporter.sources.platform.models import parse_page

ENDPOINTS = ("token", "processes", "agents", "schedules", "runs")
MAX_PAGES = 10_000


# Known in advance, so every one is served from zero; 429 (rate limited) apart from 4xx,
# as the platform's throttling is not a mistake of ours.
CLASSES = ("2xx", "3xx", "4xx", "429", "5xx", "error")


def outcome_class(code: str) -> str:
    """`2xx` … `5xx` (`429` on its own) for an HTTP status, `error` when no response came."""
    if code == "429":
        return code
    return f"{code[0]}xx" if code[:1] in ("2", "3", "4", "5") else "error"


@dataclass
class ClientStats:
    """Request counters of one tenant's client, rendered as self-metrics, every series from 0."""

    tenant: str
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    durations: dict[str, Histogram] = field(
        default_factory=lambda: {e: Histogram(families.REQUEST_BUCKETS) for e in ENDPOINTS}
    )
    retries: Counter[str] = field(default_factory=Counter)
    token_refreshes: int = 0
    token_failures: int = 0

    def request(self, endpoint: str, code: str, seconds: float) -> None:
        """Count one request."""
        self.requests[(endpoint, outcome_class(code))] += 1
        self.durations[endpoint].observe(seconds)

    def retried(self, endpoint: str) -> None:
        """Count one retry."""
        self.retries[endpoint] += 1

    def token(self, ok: bool) -> None:
        """Count one token fetch."""
        if ok:
            self.token_refreshes += 1
        else:
            self.token_failures += 1

    def render(self) -> dict[str, bytes]:
        """Sample lines of the client families."""
        t = f'tenant="{escape_label_value(self.tenant)}"'
        requests = "".join(
            f'{families.REQUESTS.name}{{{t},query="{e}",class="{c}"}} {self.requests[(e, c)]}\n'
            for e in ENDPOINTS
            for c in CLASSES
        )
        duration = "".join(
            self.durations[e].lines(families.REQUEST_DURATION.name, f'{t},query="{e}"')
            for e in ENDPOINTS
        )
        retries = "".join(
            f'{families.RETRIES.name}{{{t},query="{e}"}} {self.retries[e]}\n' for e in ENDPOINTS
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
        self._spec = spec
        self.stats = stats or ClientStats(spec.tenant)
        self._caller = Caller(
            session,
            spec.request_timeout,
            self.stats,
            follow_redirects=spec.follow_redirects,
            max_bytes=spec.max_response_bytes,
        )
        self._credentials = ClientCredentials(
            spec.token_url, spec.client_id, spec.client_secret, spec.scope
        )

    async def fetch_all(
        self, endpoint: str, params: dict[str, str], deadline: float
    ) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint."""
        return [item async for page in self.pages(endpoint, params, deadline) for item in page]

    async def pages(
        self, endpoint: str, params: dict[str, str], deadline: float
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The items of each page in turn, so a caller can keep what arrived before a failure."""
        token: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query = params | {"limit": str(self._spec.page_size)}
            if token is not None:
                query["page_token"] = token
            page = parse_page(endpoint, await self.get(endpoint, query, deadline))
            if len(page.items) > self._spec.page_size:
                # Whatever the platform sends, a page costs what we asked it to cost.
                found, asked = len(page.items), self._spec.page_size
                message = f"{endpoint}: page has {found} items, {asked} asked for"
                raise CollectionError("decode", message)
            yield page.items
            if page.next_page_token is None:
                return
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
            return await self._caller.retrying(endpoint, deadline, call)
        except UnauthorizedError:
            self._credentials.forget()
        try:
            return await self._caller.retrying(endpoint, deadline, call)
        except UnauthorizedError:
            raise CollectionError("auth", f"{endpoint}: HTTP 401 even with a new token") from None

    async def _get_once(
        self, endpoint: str, url: str, query: dict[str, str], deadline: float
    ) -> object:
        token = await self._credentials.token(self._caller, deadline)
        headers = {"Authorization": f"Bearer {token}"}
        return await self._caller.json(
            endpoint, "GET", url, deadline, params=query, headers=headers
        )
