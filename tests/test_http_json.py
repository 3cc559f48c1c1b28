"""The http_json source end to end: a JSON API served over real HTTP by the test, scraped by a
real exporter; pages, credentials, rate limits and bad bodies."""

import json
from pathlib import Path

import pytest
from aiohttp import web

from exporter.config import ConfigError, parse_config
from tests.conftest import free_port, key, write

TICKETS = [
    {"id": 1, "queue": "billing", "priority": "high", "age": 30},
    {"id": 2, "queue": "billing", "priority": "low", "age": 10},
    {"id": 3, "queue": "billing", "priority": "high", "age": 5},
    {"id": 4, "queue": "ops", "priority": "low", "age": "7.5"},
    {"id": 5, "queue": None, "priority": "low", "age": 1},
]
BEARER = "api-token-0d9f2c"


class Api:
    """A helpdesk-like API; each test sets how it answers."""

    def __init__(self) -> None:
        self.page_size = 2
        self.status: list[int] = []  # statuses to answer first, one per request
        self.body: bytes | None = None  # a fixed body instead of the tickets
        self.seen: list[web.Request] = []
        self.tokens = 0
        self.url = ""

    async def tickets(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        if self.status:
            status = self.status.pop(0)
            return web.Response(status=status, headers={"Retry-After": "0"}, text="<html>busy")
        if self.body is not None:
            return web.Response(body=self.body, content_type="application/json")
        if request.headers.get("Authorization") != f"Bearer {BEARER}":
            return web.Response(status=401)
        offset = int(request.query.get("page_token", "0"))
        page = TICKETS[offset : offset + self.page_size]
        following = offset + self.page_size
        more = following < len(TICKETS)
        return web.json_response(
            {
                "items": page,
                "next_page_token": str(following) if more else None,
                "links": {"next": f"/api/tickets?page_token={following}" if more else None},
            }
        )

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_secret") != "s3cret":
            return web.Response(status=401)
        self.tokens += 1
        return web.json_response({"access_token": BEARER, "expires_in": 3600})


@pytest.fixture
async def api():
    served = Api()
    app = web.Application()
    app.router.add_get("/api/tickets", served.tickets)
    app.router.add_post("/oauth/token", served.token)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    served.url = f"http://127.0.0.1:{port}"
    yield served
    await runner.cleanup()


def config(api: Api, tmp_path: Path, auth: str | None = None, extra: str = "") -> str:
    token = write(tmp_path / "token", BEARER + "\n")
    auth = auth or f"{{bearer_token_file: {token}}}"
    return f"""
defaults: {{interval: 30s, timeout: 5s}}
tenants:
  - id: acme
    http_json:
      - name: tickets
        url: {api.url}/api/tickets
        auth: {auth}
        pagination: {{cursor: {{param: page_token, path: "$.next_page_token"}}}}
        metrics:
          - name: helpdesk_tickets
            type: gauge
            help: Open tickets by queue and priority.
            items: "$.items[*]"
            labels: {{queue: "$.queue", priority: "$.priority"}}
          - name: helpdesk_ticket_age_seconds
            type: gauge
            help: Summed age.
            items: "$.items[*]"
            labels: {{queue: "$.queue"}}
            value: "sum:$.age"
          - {{name: helpdesk_tickets_seen, type: gauge, help: All., items: "$.items[*]"}}
{extra}"""


async def run(exporter) -> dict:
    await exporter.exporter.run_job(exporter.job("acme", "tickets", "http_json"))
    return await exporter.samples()


def ok(samples: dict) -> float:
    return samples[key("cockpit_collection_success", tenant="acme", source="http_json",
                       query="tickets")]  # fmt: skip


async def test_paged_api_with_bearer_token(api: Api, make_exporter, tmp_path: Path) -> None:
    """Three pages by cursor: items counted per label set, sums per queue, a null label
    skipped and counted; the token is sent on every page."""
    exporter = await make_exporter(config(api, tmp_path))
    samples = await run(exporter)
    assert ok(samples) == 1
    assert samples[key("helpdesk_tickets", tenant="acme", queue="billing", priority="high")] == 2
    assert samples[key("helpdesk_tickets", tenant="acme", queue="billing", priority="low")] == 1
    assert samples[key("helpdesk_tickets", tenant="acme", queue="ops", priority="low")] == 1
    assert samples[key("helpdesk_ticket_age_seconds", tenant="acme", queue="billing")] == 45
    assert samples[key("helpdesk_ticket_age_seconds", tenant="acme", queue="ops")] == 7.5
    assert samples[key("helpdesk_tickets_seen", tenant="acme")] == 5
    nulls = key("cockpit_collection_null_values_total", tenant="acme", source="http_json",
                query="tickets")  # fmt: skip
    assert samples[nulls] == 2  # ticket 5 has no queue, in two labelled metrics
    assert [r.query.get("page_token") for r in api.seen] == [None, "2", "4"]
    assert all(r.headers["Authorization"] == f"Bearer {BEARER}" for r in api.seen)
    text = await exporter.scrape()
    assert text.index('helpdesk_tickets{tenant="acme",queue=') > 0  # tenant label first


async def test_next_url_pagination_and_oauth2(api: Api, make_exporter, tmp_path: Path) -> None:
    """Pages by a URL in the body; OAuth2 client credentials fetched once and reused."""
    secret = write(tmp_path / "secret", "s3cret\n")
    auth = (f"{{oauth2: {{token_url: '{api.url}/oauth/token', client_id: cockpit, "
            f"client_secret_file: {secret}}}}}")  # fmt: skip
    text = config(api, tmp_path, auth).replace(
        '{cursor: {param: page_token, path: "$.next_page_token"}}', '{next_url: "$.links.next"}'
    )
    exporter = await make_exporter(text)
    assert ok(await run(exporter)) == 1
    assert ok(await run(exporter)) == 1
    assert len(api.seen) == 6 and api.tokens == 1


async def test_rate_limited_answers_are_retried(api: Api, make_exporter, tmp_path: Path) -> None:
    """429 and 503 with Retry-After are retried within the deadline."""
    api.status = [429, 503]
    exporter = await make_exporter(config(api, tmp_path))
    assert ok(await run(exporter)) == 1
    assert len(api.seen) == 5


@pytest.mark.parametrize(
    ("body", "status", "reason", "message"),
    [
        (b"<html>oops</html>", None, "decode", "response body is not JSON"),
        (b'{"items": [{"queue": "a", "age": "old"}]}', None, "value", "not a number"),
        (b'{"items": [{"queue": {"x": 1}, "priority": "p"}]}', None, "value", "not a string"),
        (None, 404, "http", "HTTP 404"),
        (None, 401, "auth", "HTTP 401"),
    ],
)
async def test_bad_answers_fail_with_their_reason(
    api: Api, make_exporter, tmp_path: Path, body: bytes | None, status: int | None,
    reason: str, message: str,
) -> None:  # fmt: skip
    """Non-JSON (an HTML error page), non-numbers, objects as labels, error statuses and
    refused credentials: the run fails with the reason, nothing crashes; its gauges stay as
    the last success left them until `stale_after` (test_freshness covers the expiry)."""
    exporter = await make_exporter(config(api, tmp_path))
    before = {k: v for k, v in (await run(exporter)).items() if k[0] == "helpdesk_tickets"}
    assert before
    api.body = body
    api.status = [status] * 10 if status else []
    samples = await run(exporter)
    assert ok(samples) == 0
    errors = key("cockpit_collection_errors_total", tenant="acme", source="http_json",
                 query="tickets", reason=reason)  # fmt: skip
    assert samples[errors] == 1
    assert {k: v for k, v in samples.items() if k[0] == "helpdesk_tickets"} == before
    assert message in exporter.stats("acme", "http_json", "tickets").last_error


async def test_lone_surrogates_and_odd_values(api: Api, make_exporter, tmp_path: Path) -> None:
    """A label with a lone surrogate renders as U+FFFD; numbers and booleans as labels are
    text; a string item does not get parsed as JSON."""
    api.body = json.dumps(
        {"items": [{"queue": "x\ud800", "priority": 1}, {"queue": True, "priority": 2.0}, "odd"]}
    ).encode()
    exporter = await make_exporter(config(api, tmp_path))
    samples = await run(exporter)
    assert ok(samples) == 1
    assert samples[key("helpdesk_tickets", tenant="acme", queue="x\ufffd", priority="1")] == 1
    assert samples[key("helpdesk_tickets", tenant="acme", queue="true", priority="2")] == 1


async def test_next_page_on_another_host_is_refused(
    api: Api, make_exporter, tmp_path: Path
) -> None:
    """A body pointing the next page elsewhere does not get our credentials."""
    api.body = b'{"items": [], "links": {"next": "http://127.0.0.2:9/steal"}}'
    text = config(api, tmp_path).replace(
        '{cursor: {param: page_token, path: "$.next_page_token"}}', '{next_url: "$.links.next"}'
    )
    exporter = await make_exporter(text)
    samples = await run(exporter)
    assert ok(samples) == 0
    assert "another host" in exporter.stats("acme", "http_json", "tickets").last_error


async def test_looping_pages_are_stopped(api: Api, make_exporter, tmp_path: Path) -> None:
    """A cursor that repeats is a decode failure, not an endless poll."""
    api.body = b'{"items": [], "next_page_token": "same"}'
    exporter = await make_exporter(config(api, tmp_path))
    samples = await run(exporter)
    assert ok(samples) == 0
    assert "pagination loops" in exporter.stats("acme", "http_json", "tickets").last_error


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('items: "$.items[*]"', 'items: "$.items[["'), "invalid JSONPath '$.items[['"),
        (("name: helpdesk_tickets\n", "name: cockpit_agent_up\n"), "exported by the platform"),
        (("name: helpdesk_tickets\n", "name: helpdesk_tickets_total\n"), "must not end in _total"),
        (("type: gauge\n            help: Open", "type: counter\n            help: Open"),
         "must end in _total"),
        (("auth: {bearer_token_file:", "auth: {basic: {username: u}, bearer_token_file:"),
         "password_file"),
        (("name: tickets", "name: tickets\n        headers: {Authorization: x}"),
         "credentials go in auth"),
        (("value: \"sum:$.age\"", "value: \"sum:$.[[\""), "invalid JSONPath"),
    ],
)  # fmt: skip
def test_bad_http_json_config_names_the_problem(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    """Paths compile at load; names, auth and headers are checked; each error says where."""
    api = Api()
    api.url = "http://127.0.0.1:1"
    with pytest.raises(ConfigError) as caught:
        parse_config(config(api, tmp_path).replace(*change), "x")
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_metric_names_have_one_owner_across_sources(tmp_path: Path) -> None:
    """An http_json metric may not reuse a SQL query's metric name."""
    api = Api()
    api.url = "http://127.0.0.1:1"
    sql = """queries:
  - {name: q, sql: SELECT 1 AS n, metrics: [{name: helpdesk_tickets_seen, type: gauge,
     help: x, value: n}]}
"""
    mysql = "  - id: acme\n    mysql: {dsn: 'sqlite:///x'}\n"
    text = config(api, tmp_path).replace("  - id: acme\n", mysql)
    with pytest.raises(ConfigError) as caught:
        parse_config(text + sql, "x")
    assert "http_json: metric 'helpdesk_tickets_seen' is also exported by the sql queries" in (
        caught.value.problems
    )


async def test_reload_changes_the_endpoint(api: Api, make_exporter, tmp_path: Path) -> None:
    """A reload with another metric set applies to the next run; removed series vanish."""
    exporter = await make_exporter(config(api, tmp_path))
    await run(exporter)
    changed = config(api, tmp_path).replace("name: helpdesk_tickets_seen", "name: helpdesk_all")
    await exporter.exporter.apply(parse_config(changed, "x"))
    samples = await run(exporter)
    assert samples[key("helpdesk_all", tenant="acme")] == 5
    assert key("helpdesk_tickets_seen", tenant="acme") not in samples


def test_a_negative_counter_is_dropped_and_counted() -> None:
    """A counter cannot go below zero: that sample is left out (counted as invalid), the
    others of the run are served."""
    from exporter.sources.http_json.config import Metric
    from exporter.sources.http_json.extract import extract

    metric = Metric(name="helpdesk_closed_total", type="counter", help="Closed.",
                    items="$.items[*]", labels={"queue": "$.queue"}, value="$.closed")  # fmt: skip
    page = {"items": [{"queue": "a", "closed": 4}, {"queue": "b", "closed": -2}]}
    out = extract("acme", [metric], [page], max_series=10)
    assert out.lines == {"helpdesk_closed_total": [
        'helpdesk_closed_total{tenant="acme",queue="a"} 4\n'
    ]}  # fmt: skip
    assert (out.invalid, out.series) == (1, 1)
