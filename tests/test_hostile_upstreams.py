"""Hostile upstreams: bodies that inflate or never end, redirects into the inside, tokens that
move, cookies that travel. Real servers on loopback answer as an attacker would; the
exporter is real (in this process, or its own process where memory is measured)."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exporter.sources.bounded import BYTES_PER_VALUE
from tests.conftest import free_port, key, parse_samples, write
from tests.helpers import start, stop
from tests.hostile import MIB, Server, gzip_bomb, many_items

ITEMS_METRIC = "{name: hostile_items, type: gauge, help: Items., items: '$[*]'}"


def endpoint(tenant: str, url: str, extra: str = "") -> str:
    return (
        f"  - id: {tenant}\n    http_json:\n"
        f"      - {{name: api, url: '{url}', metrics: [{ITEMS_METRIC}]{extra}}}\n"
    )


def config(*tenants: str, interval: str = "30s") -> str:
    return f"defaults: {{interval: {interval}, timeout: 2s}}\ntenants:\n" + "".join(tenants)


@pytest.fixture
async def hostile() -> AsyncIterator[Server]:
    server = await Server().start()
    yield server
    await server.stop()


@pytest.fixture
async def victim() -> AsyncIterator[Server]:
    """What a redirect points at: the inside. It must never hear from the exporter."""
    server = await Server().start()
    server.json("/", [{"id": "internal"}])
    yield server
    await server.stop()


async def run(exporter, tenant: str, kind: str = "http_json", name: str = "api") -> dict:
    await exporter.exporter.run_job(exporter.job(tenant, name, kind))
    return await exporter.samples()


def failure(exporter, tenant: str, source: str = "http_json", query: str = "api") -> tuple:
    """Whether the last run succeeded, the last reason counted, and the last message."""
    stats = exporter.stats(tenant, source, query)
    counted = [r for r, n in stats.errors.items() if n]
    return stats.success, counted[-1] if len(counted) == 1 else counted, stats.last_error


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a process, in MB (the kernel's high-water mark)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_bombs_and_floods_fail_their_run_and_the_process_stays_small(
    hostile: Server, tmp_path: Path
) -> None:
    """A 1 MB gzip body that inflates to 1 GB and a 34 MB body of a million items fail their
    runs with reason too_large, run after run, while the process stays under 300 MB, every
    health probe is answered and the well-behaved tenant stays fresh."""
    bomb, flood = gzip_bomb(), many_items()
    assert len(bomb) < 1.1 * MIB and len(flood) > 30 * MIB

    async def gzip_answer(_: web.Request) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
        return web.Response(body=bomb, headers=headers)

    async def flood_answer(_: web.Request) -> web.Response:
        return web.Response(body=flood, content_type="application/json")

    hostile.route("GET", "/bomb", gzip_answer)
    hostile.route("GET", "/flood", flood_answer)
    hostile.json("/good", [{"id": 1}, {"id": 2}])
    path = write(tmp_path / "c.yaml", config(
        endpoint("bomb", hostile.url + "/bomb"),
        endpoint("flood", hostile.url + "/flood"),
        endpoint("good", hostile.url + "/good"),
        interval="2s",
    ))  # fmt: skip
    port = free_port()
    process = start("--config", str(path), "--web.listen-address", f"127.0.0.1:{port}",
                    "--log.level", "error")  # fmt: skip
    probes: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            samples: dict = {}
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                began = time.monotonic()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        assert response.status == 200
                    probes.append(time.monotonic() - began)
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                        samples = parse_samples(await response.text())
                except aiohttp.ClientConnectionError:
                    assert process.poll() is None, "the exporter died"
                too_large = [
                    samples.get(key("cockpit_collection_errors_total", tenant=t,
                                    source="http_json", query="api", reason="too_large"), 0)
                    for t in ("bomb", "flood")
                ]  # fmt: skip
                if min(too_large) >= 3:
                    break
                await asyncio.sleep(0.1)
            assert min(too_large) >= 3, samples
            peak = vm_hwm_mb(process.pid)
    finally:
        _, output = stop(process)
    print(f"peak RSS {peak:.0f} MB, slowest of {len(probes)} probes {max(probes):.3f} s")
    assert peak < 300, f"peak RSS {peak:.0f} MB"
    fresh = key("cockpit_collection_success", tenant="good", source="http_json", query="api")
    assert samples[fresh] == 1
    assert samples[key("hostile_items", tenant="good")] == 2
    assert not any(k[0] == "hostile_items" and ("tenant", "bomb") in k[1] for k in samples)
    assert len(probes) > 10, output


async def test_a_body_past_the_limit_fails_with_its_reason_and_the_next_run_tries_again(
    hostile: Server, make_exporter
) -> None:
    """The per-endpoint limit: one byte too many fails the run (too_large, naming the limit);
    the API shrinking again makes the next run succeed."""
    items = [{"id": i} for i in range(100)]
    hostile.json("/api", items)
    text = config(endpoint("acme", hostile.url + "/api", ", max_response_bytes: 1024"))
    exporter = await make_exporter(text)
    samples = await run(exporter, "acme")
    ok, reason, message = failure(exporter, "acme")
    assert (ok, reason) == (False, "too_large")
    assert "larger than 1,024 bytes after decompression (max_response_bytes)" in message
    assert not any(k[0] == "hostile_items" for k in samples)
    hostile.json("/api", items[:10])
    samples = await run(exporter, "acme")
    assert samples[key("hostile_items", tenant="acme")] == 10


async def test_a_dense_body_under_the_byte_limit_is_bounded_by_its_values(
    hostile: Server, make_exporter
) -> None:
    """Decoding cost follows the number of values, not bytes: 1 MiB of empty arrays is more
    values than a 1 MiB limit allows (one per 16 bytes), and is refused before decoding."""
    limit = 1 * MIB
    dense = b"[" + b",".join([b"[]"] * (limit // 4)) + b"]"
    assert len(dense) < limit

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=dense, content_type="application/json")

    hostile.route("GET", "/api", answer)
    text = config(endpoint("acme", hostile.url + "/api", f", max_response_bytes: {limit}"))
    exporter = await make_exporter(text)
    await run(exporter, "acme")
    ok, reason, message = failure(exporter, "acme")
    assert (ok, reason) == (False, "too_large")
    assert f"more than {limit // BYTES_PER_VALUE:,} JSON values" in message


async def test_platform_pages_are_bounded_in_bytes_and_items(
    hostile: Server, make_exporter, tmp_path: Path
) -> None:
    """The platform client reads within limits.max_response_bytes too, and a page with more
    items than page_size asked for fails the poll instead of costing what the server likes."""
    secret = write(tmp_path / "secret", "s\n")

    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 600})

    hostile.route("POST", "/oauth/token", token)
    hostile.json("/api/v1/processes", {"items": [{"id": f"p{i}", "name": "n", "enabled": True}
                                                 for i in range(11)]})  # fmt: skip
    text = f"""
limits: {{max_response_bytes: 1048576}}
tenants:
  - id: acme
    platform: {{base_url: '{hostile.url}', token_url: '{hostile.url}/oauth/token',
               client_id: c, client_secret_file: {secret}, page_size: 10}}
"""
    exporter = await make_exporter(text)
    await run(exporter, "acme", "platform", "poll")
    ok, reason, message = failure(exporter, "acme", "platform", "processes")
    assert (ok, reason) == (False, "decode")
    assert "page has 11 items, 10 asked for" in message

    async def bomb(_: web.Request) -> web.Response:
        return web.Response(body=gzip_bomb(64 * MIB), headers={"Content-Encoding": "gzip"})

    hostile.route("GET", "/api/v1/processes", bomb)
    await run(exporter, "acme", "platform", "poll")
    ok, reasons, message = failure(exporter, "acme", "platform", "processes")
    assert (ok, reasons) == (False, ["decode", "too_large"])
    assert "1,048,576 bytes" in message


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_to_another_port_is_not_followed(
    status: int, hostile: Server, victim: Server, make_exporter
) -> None:
    """By default no redirect is followed: the run fails with reason http naming the status
    and the target's host, no series comes from the target and it receives nothing."""
    hostile.redirect("GET", "/api", status, victim.url + "/")
    text = config(endpoint("acme", hostile.url + "/api", ", headers: {X-Api-Key: k-123}"))
    exporter = await make_exporter(text)
    samples = await run(exporter, "acme")
    ok, reason, message = failure(exporter, "acme")
    assert (ok, reason) == (False, "http")
    assert f"HTTP {status} redirect to 127.0.0.1:{victim.port} not followed" in message
    assert not any(k[0] == "hostile_items" for k in samples)
    assert victim.seen == []


async def test_same_origin_redirects_are_followed_and_no_others(
    hostile: Server, victim: Server, make_exporter
) -> None:
    """follow_redirects: same_origin follows a move on the same scheme, host and port, with
    the configured header; a hop to another port, even after a same-origin one, is refused."""
    hostile.redirect("GET", "/old", 302, "/new")
    hostile.json("/new", [{"id": 1}])
    hostile.redirect("GET", "/hop", 307, "/out")
    hostile.redirect("GET", "/out", 302, victim.url + "/")
    same = ", follow_redirects: same_origin, headers: {X-Api-Key: k-123}"
    exporter = await make_exporter(config(
        endpoint("acme", hostile.url + "/old", same),
        endpoint("globex", hostile.url + "/hop", same),
    ))  # fmt: skip
    samples = await run(exporter, "acme")
    assert samples[key("hostile_items", tenant="acme")] == 1
    assert [s.headers.get("X-Api-Key") for s in hostile.seen] == ["k-123", "k-123"]
    await run(exporter, "globex")
    ok, reason, message = failure(exporter, "globex")
    assert (ok, reason) == (False, "http")
    assert "(follow_redirects: same_origin: another origin)" in message
    assert victim.seen == []


async def test_a_same_host_next_page_that_redirects_out_is_refused(
    hostile: Server, victim: Server, make_exporter
) -> None:
    """The next_url rule holds on every hop: a same-host next page that redirects to another
    port is not followed, whatever follow_redirects says."""
    hostile.json("/api", {"items": [{"id": 1}], "next": "/page2"})
    hostile.redirect("GET", "/page2", 302, victim.url + "/")
    extra = (
        ", follow_redirects: same_origin, pagination: {next_url: '$.next'},"
        " metrics: [{name: hostile_items, type: gauge, help: I., items: '$.items[*]'}]"
    )
    text = config(
        f"  - id: acme\n    http_json:\n      - {{name: api, url: '{hostile.url}/api'{extra}}}\n"
    )
    exporter = await make_exporter(text)
    await run(exporter, "acme")
    ok, reason, _ = failure(exporter, "acme")
    assert (ok, reason) == (False, "http")
    assert victim.seen == []


async def test_a_token_url_that_redirects_delivers_no_secret(
    hostile: Server, victim: Server, make_exporter, tmp_path: Path
) -> None:
    """A 307 from a token URL keeps method and body: followed, it would hand client_secret to
    its target. Neither the platform client nor http_json's OAuth2 follows it."""
    secret = write(tmp_path / "secret", "client-secret-77\n")
    hostile.redirect("POST", "/oauth/token", 307, victim.url + "/token")
    token_url = f"{hostile.url}/oauth/token"
    oauth = (f", auth: {{oauth2: {{token_url: '{token_url}', client_id: c,"
             f" client_secret_file: {secret}}}}}")  # fmt: skip
    text = config(
        endpoint("acme", hostile.url + "/api", oauth),
        f"  - id: globex\n    platform: {{base_url: '{hostile.url}', token_url: '{token_url}',"
        f" client_id: c, client_secret_file: {secret}}}\n",
    )
    exporter = await make_exporter(text)
    await run(exporter, "acme")
    await run(exporter, "globex", "platform", "poll")
    for tenant, source, query in (("acme", "http_json", "api"),
                                  ("globex", "platform", "processes")):  # fmt: skip
        ok, reason, message = failure(exporter, tenant, source, query)
        assert (ok, reason) == (False, "auth")
        assert f"HTTP 307 redirect to 127.0.0.1:{victim.port} not followed" in message
    assert victim.seen == []
    assert all(b"client-secret-77" in s.body for s in hostile.seen)  # only where configured


async def test_platform_base_url_redirect_is_not_followed(
    hostile: Server, victim: Server, make_exporter, tmp_path: Path
) -> None:
    """A platform whose API answers 302 to another port: the poll fails (http), and the
    bearer token never reaches the target."""
    secret = write(tmp_path / "secret", "s\n")

    async def token(_: web.Request) -> web.Response:
        return web.json_response({"access_token": "bearer-42", "expires_in": 600})

    hostile.route("POST", "/oauth/token", token)
    hostile.redirect("GET", "/api/v1/processes", 302, victim.url + "/api/v1/processes")
    exporter = await make_exporter(f"""
tenants:
  - id: acme
    platform: {{base_url: '{hostile.url}', token_url: '{hostile.url}/oauth/token',
               client_id: c, client_secret_file: {secret}}}
""")
    await run(exporter, "acme", "platform", "poll")
    ok, reason, message = failure(exporter, "acme", "platform", "processes")
    assert (ok, reason) == (False, "http")
    assert f"HTTP 302 redirect to 127.0.0.1:{victim.port} not followed" in message
    assert victim.seen == []


async def test_cookies_one_api_sets_never_travel(hostile: Server, make_exporter) -> None:
    """Tenants share one HTTP session: a cookie tenant acme's API sets is not kept, so
    globex's request to the same host carries none."""

    async def setter(_: web.Request) -> web.Response:
        response = web.json_response([{"id": 1}])
        response.set_cookie("session", "acme-session-secret", path="/")
        return response

    hostile.route("GET", "/acme", setter)
    hostile.json("/globex", [{"id": 2}])
    exporter = await make_exporter(config(
        endpoint("acme", hostile.url + "/acme"), endpoint("globex", hostile.url + "/globex")
    ))  # fmt: skip
    await run(exporter, "acme")
    await run(exporter, "acme")
    await run(exporter, "globex")
    assert [s.headers.get("Cookie") for s in hostile.seen] == [None, None, None]


async def test_a_token_post_follows_only_redirects_that_keep_it(
    hostile: Server, make_exporter, tmp_path: Path
) -> None:
    """With same_origin, a token POST follows a same-origin 307 (method and form kept, so the
    secret reaches the configured host only), but not a 302, which would make it a GET."""
    secret = write(tmp_path / "secret", "client-secret-88\n")

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_secret") != "client-secret-88":
            return web.Response(status=401)
        return web.json_response({"access_token": "t-1", "expires_in": 600})

    hostile.route("POST", "/oauth/token", token)
    hostile.redirect("POST", "/oauth/kept", 307, "/oauth/token")
    hostile.redirect("POST", "/oauth/moved", 302, "/oauth/token")
    hostile.json("/api", [{"id": 1}])

    def oauth(path: str) -> str:
        url = hostile.url + path
        return (f", follow_redirects: same_origin, auth: {{oauth2: {{token_url: '{url}',"
                f" client_id: c, client_secret_file: {secret}}}}}")  # fmt: skip

    exporter = await make_exporter(config(
        endpoint("acme", hostile.url + "/api", oauth("/oauth/kept")),
        endpoint("globex", hostile.url + "/api", oauth("/oauth/moved")),
    ))  # fmt: skip
    samples = await run(exporter, "acme")
    assert samples[key("hostile_items", tenant="acme")] == 1
    await run(exporter, "globex")
    ok, reason, message = failure(exporter, "globex")
    assert (ok, reason) == (False, "auth")
    assert "HTTP 302 redirect to 127.0.0.1" in message
    assert "it would turn the POST into a GET" in message
