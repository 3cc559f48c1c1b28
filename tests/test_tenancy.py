"""Tenancy fails closed over real HTTP: scopes, reloads that would widen access, concurrent
guessing, cached logins behind slow hashing, response headers and the rate limit."""

import asyncio
import base64
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from tests.conftest import ScratchDatabase, parse_samples
from tests.helpers import sha, two_tenants

OPS_TOKEN, ACME_TOKEN = "ops-token-3c9a51", "acme-token-77d2e0"
PASSWORD = "a fine password"


def web_text(extra: str = "", users: str = "") -> str:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    return (
        f"basic_auth_users: {{ops: '{hashed}'{users}}}\n"
        f"bearer_tokens:\n  - {{name: ops, sha256: {sha(OPS_TOKEN)}}}\n"
        f"  - {{name: acme-grafana, sha256: {sha(ACME_TOKEN)}, tenants: [acme]}}\n{extra}"
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def status(url: str, method: str = "GET", **kwargs: object) -> int:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as r:
        await r.read()
        return r.status


@pytest.fixture
async def served(database: ScratchDatabase, make_exporter, tmp_path: Path):
    """Two tenants, credentials from a web config file, reload enabled."""
    from exporter.webconfig import load_web_config

    database.execute("INSERT INTO work_items VALUES (1,'billing','new',1),(2,'ops','done',2)")
    web = tmp_path / "web.yaml"
    web.write_text(web_text())
    running = await make_exporter(
        two_tenants(database.dsn),
        web_config=load_web_config(web),
        web_config_file=web,
        enable_reload=True,
    )
    await running.run_all()
    return running, web


async def test_scoped_token_sees_its_tenant_and_build_info_only(served) -> None:
    """No configuration series (they change with every tenant's config) for a scoped caller;
    operators still see them."""
    running, _ = served
    scoped = parse_samples(await running.scrape(headers=bearer(ACME_TOKEN)))
    names = {name for name, _ in scoped}
    assert {dict(labels).get("tenant") for _, labels in scoped} == {"acme", None}
    untenanted = {name for name, labels in scoped if "tenant" not in dict(labels)}
    assert untenanted == {"cockpit_exporter_build_info"}
    assert "cockpit_work_items" in names
    operators = {name for name, _ in parse_samples(await running.scrape(headers=bearer(OPS_TOKEN)))}
    assert {"cockpit_exporter_config_hash", "cockpit_exporter_build_info"} <= operators


async def test_scoped_token_may_not_reload(served) -> None:
    """POST /-/reload needs a credential for every tenant."""
    running, _ = served
    assert await status(running.url + "/-/reload", "POST", headers=bearer(ACME_TOKEN)) == 403
    assert await status(running.url + "/-/reload", "POST", headers=bearer(OPS_TOKEN)) == 200


@pytest.mark.parametrize(
    ("replacement", "problem"),
    [
        (None, "cannot read file"),
        ("", "the file is empty"),
        ("basic_auth_users:\n", "basic_auth_users is null"),
        ("http_server_config: {headers: {X-Frame-Options: deny}}\n", "switch authentication off"),
        (f"bearer_tokens: [{{name: x, sha256: {sha('x')}, tenants: []}}]\n", "at least 1"),
    ],
)
async def test_reload_that_would_widen_access_keeps_the_old_credentials(
    served, replacement: str | None, problem: str
) -> None:
    """A missing, emptied, credential-less or empty-scoped web config is refused on reload:
    the old credentials stay in force and the reload metric says it failed."""
    running, web = served
    if replacement is None:
        web.unlink()
    else:
        web.write_text(replacement)
    problems = await running.exporter.reload()
    assert any(problem in p for p in problems), problems
    assert await status(running.url + "/metrics") == 401
    assert await status(running.url + "/metrics", headers=bearer(OPS_TOKEN)) == 200
    samples = parse_samples(await running.scrape(headers=bearer(OPS_TOKEN)))
    assert samples[("cockpit_exporter_config_last_reload_successful", frozenset())] == 0


async def test_concurrent_guesses_cannot_pass_the_failure_limit(served) -> None:
    """100 concurrent wrong passwords from one address: exactly 10 are checked, 90 refused."""
    running, _ = served
    url = running.url + "/metrics"
    answers = await asyncio.gather(*(status(url, headers=basic("ops", "x")) for _ in range(100)))
    assert sorted(answers) == [401] * 10 + [429] * 90


async def test_cached_login_does_not_wait_behind_slow_hashing(
    database: ScratchDatabase, make_exporter, tmp_path: Path
) -> None:
    """Six guesses against a costly hash occupy the bcrypt thread; a login already cached
    is answered before the first of them."""
    from exporter.webconfig import load_web_config

    slow = bcrypt.hashpw(b"slow", bcrypt.gensalt(rounds=13)).decode()
    web = tmp_path / "web.yaml"
    web.write_text(web_text(users=f", slow: '{slow}'"))
    running = await make_exporter(two_tenants(database.dsn), web_config=load_web_config(web))
    url = running.url + "/"
    assert await status(url, headers=basic("ops", PASSWORD)) == 200  # now cached
    finished: list[str] = []

    async def call(name: str, headers: dict[str, str]) -> int:
        answer = await status(url, headers=headers)
        finished.append(name)
        return answer

    guesses = [asyncio.create_task(call("guess", basic("slow", "wrong"))) for _ in range(6)]
    await asyncio.sleep(0.05)  # let the guesses reach the bcrypt thread first
    assert await call("cached", basic("ops", PASSWORD)) == 200
    assert await asyncio.gather(*guesses) == [401] * 6
    assert finished[0] == "cached"


async def test_configured_headers_on_every_response_and_rate_limit(
    database: ScratchDatabase, make_exporter, tmp_path: Path
) -> None:
    """http_server_config.headers reach 200, 401, 404 and health answers; rate_limit turns
    requests past the burst into 429 (health checks included, as in exporter-toolkit)."""
    from exporter.webconfig import load_web_config

    web = tmp_path / "web.yaml"
    web.write_text(
        web_text(
            "http_server_config:\n  headers: {X-Frame-Options: deny, "
            "Strict-Transport-Security: max-age=31536000}\n"
            "rate_limit: {interval: 1h, burst: 4}\n"
        )
    )
    running = await make_exporter(two_tenants(database.dsn), web_config=load_web_config(web))
    async with aiohttp.ClientSession() as session:
        seen = []
        for path, headers in [
            ("/metrics", bearer(OPS_TOKEN)),
            ("/metrics", {}),
            ("/nope", bearer(OPS_TOKEN)),
            ("/healthz", {}),
            ("/healthz", {}),
        ]:
            async with session.get(running.url + path, headers=headers) as response:
                seen.append((response.status, response.headers.get("X-Frame-Options")))
                assert response.headers.get("Strict-Transport-Security") == "max-age=31536000"
    assert seen == [(200, "deny"), (401, "deny"), (404, "deny"), (200, "deny"), (429, "deny")]


async def test_an_expired_token_is_refused_and_its_successor_takes_over_without_a_gap(
    make_exporter, tmp_path: Path
) -> None:
    """Rotation: the old token (expiring) and the new one listed side by side; scrapes go on
    without a failure while the scraper moves over; after expiry the old one gets 401. The
    expiry gauge says when each token stops working (none for one that never does)."""
    import asyncio
    import datetime as dt
    import time

    from exporter.webconfig import load_web_config
    from tests.helpers import sha

    old, new, forever = "old-secret-token", "new-secret-token", "ops-secret-token"
    ends = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    web = tmp_path / "web.yaml"
    web.write_text(
        "bearer_tokens:\n"
        f"  - {{name: prometheus, sha256: {sha(old)}, expires: '{ends.isoformat()}'}}\n"
        f"  - {{name: prometheus-next, sha256: {sha(new)}, expires: '2099-01-01T00:00:00Z'}}\n"
        f"  - {{name: ops, sha256: {sha(forever)}}}\n"
    )
    running = await make_exporter("tenants: [{id: a}]\n", web_config=load_web_config(web))

    async def status(token: str) -> int:
        response = await running.get(headers={"Authorization": f"Bearer {token}"})
        return response.status

    assert await status(old) == 200 and await status(new) == 200
    gauges = {
        dict(labels)["token"]: value
        for (name, labels), value in (await running.samples(
            headers={"Authorization": f"Bearer {new}"})).items()
        if name == "cockpit_exporter_token_expiry_timestamp_seconds"
    }  # fmt: skip
    assert gauges == {"prometheus": pytest.approx(ends.timestamp()),
                      "prometheus-next": 4070908800}  # fmt: skip
    await asyncio.sleep(max(0.0, ends.timestamp() - time.time() + 0.2))
    assert await status(old) == 401
    assert await status(new) == 200
