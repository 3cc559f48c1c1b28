"""`grafana sync` against request/response pairs taken from Grafana's HTTP API docs.

Grafana cannot run here. The server below answers only the documented calls, each with the
shape of its documented example response (docs/sources/developers/http_api/org.md and
team.md in grafana/grafana); each test chooses the ids and names in those answers. Nothing
else of Grafana's behaviour is imitated: the tests check the plan, the requests we send
(method, path, body, headers) and how we read the documented answers.
"""

import asyncio
import base64
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from exporter.config import parse_config
from exporter.grafana.sync import (
    GrafanaApi,
    SyncError,
    apply,
    plan,
    sync,
    wanted_orgs,
)
from tests.conftest import free_port

CONFIG = """
grafana:
  prometheus_url: http://prometheus:9090
  tenant_proxy_url: http://prom-label-proxy:8080
  landing_org_id: 2
tenants:
  - {id: acme, grafana: {org_id: 3, group: acme-ops}}
  - {id: globex, grafana: {org_id: 4}}
"""
ADMIN = "admin:s3cret-admin-password"


RELOADS = {
    "/api/admin/provisioning/datasources/reload": "Datasources config reloaded",
    "/api/admin/provisioning/dashboards/reload": "Dashboards config reloaded",
}


class DocumentedGrafana:
    """Answers GET/POST /api/orgs and GET /api/teams/search, POST /api/teams as documented."""

    def __init__(self, orgs: dict[int, str], teams: set[tuple[int, str]], next_id: int) -> None:
        self.orgs, self.teams, self.next_id = orgs, teams, next_id
        self.requests: list[tuple[str, str, Any, dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append((request.method, request.path_qs, body, dict(request.headers)))
        route = (request.method, request.path)
        if route == ("GET", "/api/orgs"):
            # org.md "Search all Organizations": [{"id":1,"name":"Main Org."}]
            return web.json_response([{"id": i, "name": n} for i, n in self.orgs.items()])
        if route == ("POST", "/api/orgs"):
            # org.md "Create Organization": {"orgId":"1","message":"Organization created"}
            org_id, self.next_id = self.next_id, self.next_id + 1
            self.orgs[org_id] = body["name"]
            return web.json_response({"orgId": str(org_id), "message": "Organization created"})
        org = int(request.headers.get("X-Grafana-Org-Id", "1"))
        if route == ("GET", "/api/teams/search"):
            name = request.query["name"]
            if (org, name) not in self.teams:  # team.md: 404 Team not found (by name)
                return web.json_response({"message": "Team not found"}, status=404)
            team = {"id": 1, "orgId": org, "name": name, "email": "", "avatarUrl": "",
                    "memberCount": 0}  # fmt: skip
            return web.json_response({"totalCount": 1, "teams": [team], "page": 1, "perPage": 1000})
        if route == ("POST", "/api/teams"):
            self.teams.add((org, body["name"]))
            # team.md "Add Team": {"message":"Team created","teamId":2,"uid":"ceaulqadfoav4e"}
            return web.json_response({"message": "Team created", "teamId": 2, "uid": "c1"})
        if request.method == "POST" and request.path in RELOADS:
            # admin.md "Reload provisioning configurations": {"message":"Dashboards config
            # reloaded"}; the datasources message is admin_provisioning.go's.
            return web.json_response({"message": RELOADS[request.path]})
        return web.json_response({"message": "Not found"}, status=404)


async def serve(grafana: DocumentedGrafana, port: int = 0) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", grafana.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


def test_plan_for_a_fresh_grafana() -> None:
    """Only Main Org. exists: landing and tenant orgs are created in id order, teams ensured."""
    steps = plan(wanted_orgs(parse_config(CONFIG, "x")), {1: "Main Org."})
    assert [str(s) for s in steps] == [
        "keep org 1 Main Org.",
        "create org 2 cockpit-landing",
        "create org 3 acme",
        "create org 4 globex",
        "ensure team 1 cockpit-operators",
        "ensure team 3 acme-ops",
        "ensure team 4 cockpit-globex",
    ]


@pytest.mark.parametrize(
    ("existing", "problem"),
    [
        ({1: "Main Org.", 2: "other"}, "org 2 is 'other' in Grafana, not 'cockpit-landing'"),
        ({1: "Main Org.", 7: "acme"}, "org 'acme' has id 7 in Grafana; the config says 3"),
        ({}, "org 1 (operators) does not exist"),
    ],
)  # fmt: skip
def test_conflicts_stop_the_plan(existing: dict[int, str], problem: str) -> None:
    """An id used for another name, or a name under another id, is never 'fixed' silently."""
    with pytest.raises(SyncError) as caught:
        plan(wanted_orgs(parse_config(CONFIG, "x")), existing)
    assert problem in str(caught.value)


async def test_apply_creates_orgs_and_teams_with_documented_calls() -> None:
    """Orgs are created by name with basic auth, teams inside their org (X-Grafana-Org-Id);
    a second run changes nothing (idempotent)."""
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=2)
    runner, url = await serve(grafana)
    auth = "Basic " + base64.b64encode(ADMIN.encode()).decode()
    try:
        async with aiohttp.ClientSession() as session:
            api = GrafanaApi(session, url, auth)
            wanted = wanted_orgs(parse_config(CONFIG, "x"))
            done = await apply(plan(wanted, await api.orgs()), api)
            grafana.requests.clear()
            again = await apply(plan(wanted, await api.orgs()), api)
    finally:
        await runner.cleanup()
    assert done == [
        "created org 2 cockpit-landing",
        "created org 3 acme",
        "created org 4 globex",
        "created team cockpit-operators in org 1",
        "created team acme-ops in org 3",
        "created team cockpit-globex in org 4",
    ]
    assert again == []
    assert [(m, p) for m, p, _, _ in grafana.requests] == [
        ("GET", "/api/orgs?perpage=1000&page=1"),
        ("GET", "/api/teams/search?name=cockpit-operators"),
        ("GET", "/api/teams/search?name=acme-ops"),
        ("GET", "/api/teams/search?name=cockpit-globex"),
    ]
    assert all(h["Authorization"] == auth for _, _, _, h in grafana.requests)
    assert grafana.requests[2][3]["X-Grafana-Org-Id"] == "3"


async def test_an_org_created_with_another_id_stops_the_sync() -> None:
    """Grafana picks ids itself: when it picks another than the config's, sync stops and says
    which org_id to set, before creating anything further."""
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=9)
    runner, url = await serve(grafana)
    try:
        async with aiohttp.ClientSession() as session:
            api = GrafanaApi(session, url, "Bearer x")
            wanted = wanted_orgs(parse_config(CONFIG, "x"))
            with pytest.raises(SyncError, match="with id 9, but the config says 2"):
                await apply(plan(wanted, await api.orgs()), api)
    finally:
        await runner.cleanup()
    assert [b for m, _, b, _ in grafana.requests if m == "POST"] == [{"name": "cockpit-landing"}]


def test_command_dry_run_and_record(tmp_path: Path) -> None:
    """The real command: --dry-run only reads; a real run records each tenant's org id; the
    admin password never appears in its output."""
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=2)
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    dry = run_sync(grafana, config, "--dry-run")
    methods = {m for m, _, _, _ in grafana.requests}
    trail = tmp_path / "audit.jsonl"
    real = run_sync(grafana, config, "--record", str(tmp_path / "orgs.json"), "--audit.file",
                    str(trail))  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "plan: create org 3 acme" in dry.stdout and "dry run: nothing changed" in dry.stdout
    assert methods == {"GET"}
    assert real.returncode == 0, real.stderr
    assert json.loads((tmp_path / "orgs.json").read_text()) == {
        "acme": 3, "cockpit-landing": 2, "globex": 4,
    }  # fmt: skip
    assert "s3cret-admin-password" not in dry.stdout + dry.stderr + real.stdout + real.stderr
    # The audit trail has one record of what the sync changed, and no credential.
    (entry,) = [json.loads(line) for line in trail.read_text().splitlines()]
    assert entry["action"] == "grafana sync" and "created org 3 acme" in entry["actions"]
    assert "s3cret-admin-password" not in trail.read_text()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ((), "exactly one of"),
        (("--basic-auth-file", "missing"), "cannot read credentials"),
        (("--basic-auth-file", "no-colon"), "expected user:password"),
    ],
)
def test_command_refuses_bad_credentials_files(
    tmp_path: Path, files: tuple[str, ...], expected: str
) -> None:
    """No credentials, an unreadable file or a malformed one: exit 1 with the reason."""
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "no-colon").write_text("justatoken\n")
    args = [tmp_path / f if i % 2 else f for i, f in enumerate(files)]
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "grafana", "sync", "--config",
         str(tmp_path / "config.yaml"), "--url", "http://127.0.0.1:9", *map(str, args)],
        check=False, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and expected in result.stderr, result.stderr


def run_sync(grafana: DocumentedGrafana, config: Path, *extra: str) -> subprocess.CompletedProcess:
    """`grafana sync` as a process against `grafana`, served from a thread meanwhile."""
    loop = asyncio.new_event_loop()
    runner, url = loop.run_until_complete(serve(grafana))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    (config.parent / "admin").write_text(ADMIN + "\n")
    try:
        return subprocess.run(
            [sys.executable, "-m", "exporter", "grafana", "sync", "--config", str(config),
             "--url", url, "--basic-auth-file", str(config.parent / "admin"), *extra],
            check=False, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_provision_writes_after_the_orgs_exist_then_reloads(tmp_path: Path) -> None:
    """--provision: the orgs are created first, then the `render grafana` files are written
    and Grafana is asked to reload datasources, then dashboards (documented calls). A dry
    run writes nothing and reloads nothing."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "grafana"
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=2)
    dry = run_sync(grafana, config, "--provision", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"plan: write provisioning under {out}, reload it" in dry.stdout
    assert not out.exists() and {m for m, _, _, _ in grafana.requests} == {"GET"}
    real = run_sync(grafana, config, "--provision", str(out))
    assert real.returncode == 0, real.stderr
    posts = [p for m, p, _, _ in grafana.requests if m == "POST"]
    assert posts[:3] == ["/api/orgs"] * 3 and posts[-2:] == list(RELOADS), posts
    assert "reloaded dashboards: Dashboards config reloaded" in real.stdout
    datasources = yaml.safe_load((out / "provisioning/datasources/cockpit.yaml").read_text())
    assert {d["orgId"] for d in datasources["datasources"]} == {1, 3, 4}
    assert sorted(p.name for p in (out / "dashboards").iterdir()) == ["org-1", "org-3", "org-4"]


def test_provision_refuses_a_tenant_without_an_org_before_calling_grafana(
    tmp_path: Path,
) -> None:
    """Provisioning needs an org per tenant: a tenant without one is a config error named
    before Grafana is called at all."""
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG + "  - {id: initech}\n")
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=2)
    result = run_sync(grafana, config, "--provision", str(tmp_path / "out"))
    assert result.returncode == 2 and "tenant 'initech'" in result.stderr, result.stderr
    assert grafana.requests == [] and not (tmp_path / "out").exists()


async def test_wait_asks_again_until_grafana_answers(tmp_path: Path) -> None:
    """--wait: a Grafana that starts 3 s after the sync is still synced; without it the
    refused connection is the error, named with the call."""
    config = parse_config(CONFIG, "x")
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=2)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(SyncError, match=r"GET /api/orgs.*ClientConnectorError"):
        await sync(config, url, "Bearer x", dry_run=True)

    async def late() -> web.AppRunner:
        await asyncio.sleep(3)
        return (await serve(grafana, port))[0]

    starting = asyncio.create_task(late())
    steps, done = await sync(config, url, "Bearer x", dry_run=False, wait=20)
    await (await starting).cleanup()
    assert "created org 4 globex" in done and len(steps) == 7
