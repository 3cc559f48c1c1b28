"""The audit trail: admin actions of a running exporter, hash-chained, verified by the CLI."""

import asyncio
import json
import sys
import time
from base64 import b64encode
from pathlib import Path

import aiohttp
import bcrypt
import pytest

from exporter import audit
from exporter.audit import GENESIS, AuditLog, verify
from exporter.webconfig import load_web_config
from tests.conftest import ScratchDatabase, write
from tests.helpers import sha

PASSWORD = "ops-password-never-logged"
SCOPED = "scoped-token-never-logged"
QUERY = """queries:
  - name: v
    sql: SELECT SUM(v) AS v FROM t WHERE owner = :tenant_id
    metrics: [{name: cockpit_v, type: gauge, help: V., value: v}]
"""


def config(registry: ScratchDatabase, static: str = "") -> str:
    return (
        "tenant_discovery:\n"
        f"  dsn: mysql://root@127.0.0.1:3306/{registry.name}\n"
        "  sql: SELECT slug AS id, db_name AS `database`, id AS tenant_id FROM tenants\n"
        "  mysql: {dsn: 'mysql://root@127.0.0.1:3306/{database}'}\n"
        f"tenants: [{static}]\n{QUERY}"
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def wait_for(trail: AuditLog, count: int) -> None:
    for _ in range(100):
        if trail.written >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{trail.written} audit records written, {count} expected")


async def post(url: str, user: str, password: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url,
            headers={"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()},
        ) as response,  # fmt: skip
    ):
        return response.status


async def get(url: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status


async def test_reloads_refusals_and_discovery_each_append_one_chained_record(
    make_database, make_exporter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload by basic-auth user `ops` (a static tenant and a token added), a refused
    reload, a discovery change, refused logins and a scoped token's first use: one record
    each, naming who; the chain verifies, an edited record is named, no secret is written."""
    monkeypatch.setattr(audit, "SUMMARY_EVERY", 0.5)
    registry, tenant_db = make_database(), make_database()
    registry.execute(
        "CREATE TABLE tenants (id INT PRIMARY KEY, slug VARCHAR(80), db_name VARCHAR(80))",
        f"INSERT INTO tenants VALUES (1, 'acme', '{tenant_db.name}')",
    )
    tenant_db.execute("CREATE TABLE t (owner INT, v INT)", "INSERT INTO t VALUES (1, 5)")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    users = f"basic_auth_users: {{ops: '{hashed}'}}\n"
    web = write(tmp_path / "web.yaml", users)
    path = write(tmp_path / "config.yaml", config(registry))
    trail_file = tmp_path / "audit.jsonl"
    running = await make_exporter(
        path.read_text(), web_config=load_web_config(web), web_config_file=web, config=path,
        enable_reload=True, audit_file=trail_file,
    )  # fmt: skip
    trail = running.exporter.observers.audit
    reload = running.url + "/-/reload"

    static = (
        f"{{id: initech, params: {{tenant_id: 1}},"
        f" mysql: {{dsn: 'mysql://root@127.0.0.1:3306/{tenant_db.name}'}}}}"
    )
    path.write_text(config(registry, static))
    token = f"bearer_tokens: [{{name: acme-grafana, sha256: {sha(SCOPED)}, tenants: [acme]}}]\n"
    web.write_text(users + token)
    assert await post(reload, "ops", PASSWORD) == 200
    path.write_text("tenants: [oops\n")
    assert await post(reload, "ops", PASSWORD) == 400
    path.write_text(config(registry, static))
    registry.execute(f"INSERT INTO tenants VALUES (2, 'globex', '{tenant_db.name}')")
    await running.exporter.discovery.poll()
    assert await post(reload, "ops", "wrong") == 401
    assert await post(reload, "mallory", "x") == 401
    for _ in range(2):
        assert await get(running.url + "/metrics", {"Authorization": f"Bearer {SCOPED}"}) == 200
    await wait_for(trail, 8)

    found = records(trail_file)
    by_action = {}
    for record in found:
        by_action.setdefault(record["action"], []).append(record)
    (start,) = by_action["start"]
    assert start["who"] == "process" and start["shard"] == "0/1"
    (reloaded,) = by_action["reload"]
    assert reloaded["who"] == "ops"
    assert reloaded["tenants"]["added"]["names"] == ["initech"]
    assert reloaded["jobs"]["added"]["names"] == ["initech/sql/v"]
    assert reloaded["credentials"]["tokens"]["added"]["names"] == ["acme-grafana"]
    (refused,) = by_action["reload refused"]
    assert refused["who"] == "ops" and refused["problems"]
    # The first round (at start) found acme; the later one globex.
    discovered = [r["tenants"]["added"]["names"] for r in by_action["tenants discovered"]]
    assert discovered == [["acme"], ["globex"]]
    denied = {(r["who"], r["status"]): r["count"] for r in by_action["access refused"]}
    assert denied == {("ops", 401): 1, ("unauthenticated (basic)", 401): 1}
    (first,) = by_action["token first use"]
    assert first["who"] == "acme-grafana"
    assert found[0]["prev"] == GENESIS

    text = trail_file.read_text()
    for secret in (PASSWORD, SCOPED, hashed, sha(SCOPED), "mallory"):
        assert secret not in text
    assert verify([trail_file]) == (len(found), None)

    # Change one earlier record (who did the reload): verify names that line and fails.
    lines = text.splitlines()
    index = next(i for i, r in enumerate(found) if r["action"] == "reload")
    lines[index] = lines[index].replace('"who":"ops"', '"who":"root"')
    trail_file.write_text("\n".join(lines) + "\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "exporter", "audit", "verify", str(trail_file),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    assert process.returncode == 1
    assert f"{trail_file}:{index + 1}: record altered" in stderr.decode()


def test_the_trail_rotates_continues_across_restarts_and_verifies_across_files(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    first = AuditLog(path, max_bytes=4096, keep=2)
    for n in range(60):
        first.record("reload", "SIGHUP", n=n)
    first.close()
    second = AuditLog(path, max_bytes=4096, keep=2)  # a restart: the chain goes on
    second.record("reload", "SIGHUP", n=60)
    second.close()
    files = [path.with_name("audit.jsonl.2"), path.with_name("audit.jsonl.1"), path]
    assert all(f.exists() for f in files) and not path.with_name("audit.jsonl.3").exists()
    assert all(f.stat().st_size <= 4096 for f in files)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    count, broken = verify(files)
    assert broken is None and count == sum(len(f.read_text().splitlines()) for f in files)
    assert records(path)[-1]["n"] == 60
    # A file left out of the middle breaks the chain where it was.
    assert verify([files[0], path])[1] is not None


def test_a_failed_write_is_counted_and_never_follows_a_symlink(tmp_path: Path) -> None:
    target = write(tmp_path / "elsewhere", "")
    path = tmp_path / "audit.jsonl"
    path.symlink_to(target)
    trail = AuditLog(path)
    began = time.monotonic()
    trail.record("reload", "SIGHUP")  # returns at once: the thread writes
    assert time.monotonic() - began < 0.05
    trail.close()
    assert trail.failures == 1 and trail.written == 0
    assert target.read_text() == ""
    assert b"cockpit_exporter_audit_write_failures_total 1" in trail.render()[audit.FAILURES.name]


def test_verify_names_a_cut_short_record_and_accepts_an_intact_trail(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    trail = AuditLog(path)
    for n in range(3):
        trail.record("reload", "SIGHUP", n=n)
    trail.close()
    assert verify([path]) == (3, None)
    with path.open("ab") as handle:
        handle.write(b'{"action":"rel')
    _, broken = verify([path])
    assert broken is not None and f"{path}:4: not an audit record" in broken
    # The newest record's prev edited: that record is the one named.
    lines = path.read_text().splitlines()[:3]
    lines[2] = lines[2].replace(json.loads(lines[2])["prev"], "f" * 64)
    path.write_text("\n".join(lines) + "\n")
    assert verify([path])[1] == f"{path}:2 or {path}:3: a record was altered"
