"""`cockpit-exporter grafana sync`: create the orgs and teams the provisioning files expect.

Grafana's provisioning does not create organisations, and Grafana assigns org ids itself
(the next free one). So the plan compares the configured ids with what Grafana has, creates
missing orgs in id order, checks each created org got the configured id, and records the
ids. Nothing is renamed or deleted: a configured id that Grafana uses for another name is a
conflict to resolve by hand. With --provision it then writes the provisioning files and asks
Grafana to reload them. Calls follow Grafana's HTTP API docs (org.md, team.md, admin.md); the
admin org and provisioning APIs accept only a Grafana Admin's basic authentication.
"""

import asyncio
import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from exporter.config import Config, ConfigError
from exporter.errors import CollectionError
from exporter.receivers import tenant_group
from exporter.render.grafana import grafana_settings, write_provisioning
from exporter.render.grafana_ini import OPERATORS_ORG
from exporter.sources.bounded import DEFAULT_MAX_BYTES, read_body

LANDING_ORG_NAME = "cockpit-landing"
WAIT_STEP = 2.0
RELOADED = ("datasources", "dashboards")  # datasources first: the dashboards query them
TIMEOUT = aiohttp.ClientTimeout(total=30)


class SyncError(Exception):
    """Grafana's state or answer does not allow the sync to go on; the message says why."""


class UnreachableError(SyncError):
    """Grafana did not answer at all (refused, reset, timed out)."""


@dataclass(frozen=True)
class WantedOrg:
    """An org the provisioning files refer to, and the team made for its group."""

    org_id: int
    name: str | None  # None: keep whatever org 1 is called
    team: str | None
    tenant: str | None = None


@dataclass(frozen=True)
class Step:
    """One line of the plan."""

    action: str  # "keep org", "create org", "ensure team"
    org_id: int
    name: str

    def __str__(self) -> str:
        return f"{self.action} {self.org_id} {self.name}"


def wanted_orgs(config: Config) -> list[WantedOrg]:
    """Operators' org, the landing org and one org per tenant, in id order."""
    grafana = config.grafana
    if grafana is None:
        raise ConfigError(config.source, ["grafana: needed to sync Grafana"])
    orgs = [
        WantedOrg(OPERATORS_ORG, None, grafana.operators_group),
        WantedOrg(grafana.landing_org_id, LANDING_ORG_NAME, None),
    ]
    orgs += [
        WantedOrg(org.org_id, tenant, tenant_group(tenant, org), tenant)
        for tenant, org in config.grafana_orgs.items()
    ]
    return sorted(orgs, key=lambda o: o.org_id)


def plan(wanted: Iterable[WantedOrg], existing: Mapping[int, str]) -> list[Step]:
    """Steps that bring Grafana to the wanted orgs; conflicts raise SyncError."""
    ids_by_name = {name: org_id for org_id, name in existing.items()}
    steps, conflicts = [], []
    for org in wanted:
        current = existing.get(org.org_id)
        name = org.name or current or ""
        if current is not None and (org.name is None or current == org.name):
            steps.append(Step("keep org", org.org_id, name))
        elif current is not None:
            conflicts.append(f"org {org.org_id} is {current!r} in Grafana, not {org.name!r}")
        elif org.name is None:
            conflicts.append(f"org {org.org_id} (operators) does not exist in Grafana")
        elif org.name in ids_by_name:
            where = f"org {org.name!r} has id {ids_by_name[org.name]} in Grafana"
            conflicts.append(f"{where}; the config says {org.org_id}")
        else:
            steps.append(Step("create org", org.org_id, name))
    if conflicts:
        raise SyncError("; ".join(conflicts))
    steps += [Step("ensure team", o.org_id, o.team) for o in wanted if o.team is not None]
    return steps


class GrafanaApi:
    """The few Grafana HTTP API calls the sync makes."""

    def __init__(self, session: aiohttp.ClientSession, url: str, authorization: str) -> None:
        self._session, self._url = session, url.rstrip("/")
        self._headers = {"Authorization": authorization, "Accept": "application/json"}

    async def orgs(self) -> dict[int, str]:
        """GET /api/orgs: every org's id and name."""
        body = await self._call("GET", "/api/orgs?perpage=1000&page=1")
        return {int(o["id"]): str(o["name"]) for o in _list_of_dicts(body, "/api/orgs")}

    async def create_org(self, name: str) -> int:
        """POST /api/orgs; returns the id Grafana gave the org."""
        body = await self._call("POST", "/api/orgs", {"name": name})
        return int(_field(body, "orgId", "/api/orgs"))  # the docs show it as a string

    async def has_team(self, org_id: int, name: str) -> bool:
        """GET /api/teams/search?name=: 404 when no team has that name."""
        query = "/api/teams/search?" + urlencode({"name": name})
        body = await self._call("GET", query, org_id=org_id, missing_ok=True)
        return body is not None and int(_field(body, "totalCount", query)) > 0

    async def create_team(self, org_id: int, name: str) -> int:
        """POST /api/teams in the org; returns the team id."""
        body = await self._call("POST", "/api/teams", {"name": name}, org_id=org_id)
        return int(_field(body, "teamId", "/api/teams"))

    async def reload(self, kind: str) -> str:
        """POST /api/admin/provisioning/KIND/reload; returns Grafana's message."""
        path = f"/api/admin/provisioning/{kind}/reload"
        return str(_field(await self._call("POST", path), "message", path))

    async def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        org_id: int | None = None,
        missing_ok: bool = False,
    ) -> Any:
        headers = dict(self._headers)
        if org_id is not None:
            headers["X-Grafana-Org-Id"] = str(org_id)
        try:
            # Not followed: the admin credential goes to the configured Grafana only.
            async with self._session.request(
                method,
                self._url + path,
                json=payload,
                headers=headers,
                timeout=TIMEOUT,
                allow_redirects=False,
            ) as response:
                raw = await read_body(response, DEFAULT_MAX_BYTES, f"{method} {path}")
                text = raw.decode("utf-8", "replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnreachableError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        except CollectionError as exc:
            raise SyncError(str(exc)) from None
        if response.status == 404 and missing_ok:
            return None
        if response.status >= 300:
            raise SyncError(f"{method} {path}: HTTP {response.status}: {_message(text)}")
        try:
            return json.loads(text)
        except ValueError:
            raise SyncError(f"{method} {path}: answer is not JSON") from None


def _message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return "(no JSON message)"
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:200] if message else "(no message)"


def _field(body: Any, key: str, where: str) -> Any:
    if not isinstance(body, dict) or key not in body:
        raise SyncError(f"{where}: answer has no {key!r}")
    return body[key]


def _list_of_dicts(body: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(o, dict) for o in body):
        raise SyncError(f"{where}: expected a list of orgs")
    return body


async def apply(steps: Iterable[Step], api: GrafanaApi) -> list[str]:
    """Carry out the steps in order; returns one line per change made."""
    done = []
    for step in steps:
        if step.action == "create org":
            got = await api.create_org(step.name)
            if got != step.org_id:
                raise SyncError(
                    f"Grafana created org {step.name!r} with id {got}, but the config says"
                    f" {step.org_id}: set that org_id to {got}, re-render and run sync again"
                )
            done.append(f"created org {got} {step.name}")
        elif step.action == "ensure team" and not await api.has_team(step.org_id, step.name):
            await api.create_team(step.org_id, step.name)
            done.append(f"created team {step.name} in org {step.org_id}")
    return done


def record(wanted: Sequence[WantedOrg]) -> dict[str, int]:
    """Org id per tenant (and the landing org), as written by --record."""
    ids = {o.tenant: o.org_id for o in wanted if o.tenant is not None}
    return {**ids, LANDING_ORG_NAME: next(o.org_id for o in wanted if o.name == LANDING_ORG_NAME)}


def authorization(basic_auth_file: Path | None, token_file: Path | None) -> str:
    """The Authorization header from exactly one credentials file (`user:password` or token)."""
    if (basic_auth_file is None) == (token_file is None):
        raise SyncError("pass exactly one of --basic-auth-file and --token-file")
    path = basic_auth_file or token_file
    assert path is not None  # for mypy: one of the two is set
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SyncError(f"{path}: cannot read credentials: {type(exc).__name__}") from None
    if not secret or (basic_auth_file is not None and ":" not in secret):
        raise SyncError(f"{path}: expected {'user:password' if basic_auth_file else 'a token'}")
    if basic_auth_file is not None:
        return "Basic " + base64.b64encode(secret.encode()).decode()
    return f"Bearer {secret}"


async def provision(config: Config, api: GrafanaApi, out: Path) -> list[str]:
    """Write the provisioning files under `out`, then have Grafana read them again.

    Only after the orgs exist: Grafana refuses provisioning that names a missing org, at
    start-up as on reload, so a stack writes these files here rather than before Grafana starts.
    """
    written = write_provisioning(config, out)
    done = [f"wrote {len(written)} files under {out}"]
    for kind in RELOADED:
        done.append(f"reloaded {kind}: {await api.reload(kind)}")
    return done


async def orgs_when_up(api: GrafanaApi, wait: float) -> dict[int, str]:
    """Grafana's orgs, asking again every 2 s for up to `wait` seconds while it is unreachable.

    A stack starts this job beside Grafana rather than after it (see docker-compose.yml), so
    the first answers may be refused connections; an HTTP error is an answer and stops us.
    """
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        try:
            return await api.orgs()
        except UnreachableError:
            if asyncio.get_running_loop().time() + WAIT_STEP > deadline:
                raise
        await asyncio.sleep(WAIT_STEP)


async def sync(  # noqa: PLR0917 - the command's options, one each
    config: Config,
    url: str,
    auth: str,
    dry_run: bool,
    out: Path | None = None,
    wait: float = 0.0,
) -> tuple[list[Step], list[str]]:
    """Read Grafana's orgs, plan, and (unless a dry run) apply and provision into `out`."""
    wanted = wanted_orgs(config)
    if out is not None:
        grafana_settings(config)  # a tenant without an org stops us before Grafana is touched
    async with aiohttp.ClientSession() as session:
        api = GrafanaApi(session, url, auth)
        steps = plan(wanted, await orgs_when_up(api, wait))
        if dry_run:
            return steps, []
        done = await apply(steps, api)
        return steps, done + ([] if out is None else await provision(config, api, out))
