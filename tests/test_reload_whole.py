"""A reload applies whole or not at all, and token scopes agree with tenant discovery: real
TLS with client certificates made by openssl, real HTTP, the real exporter."""

import os
import ssl
import time
import uuid
from pathlib import Path

import aiohttp
import bcrypt
import pytest
import structlog

from exporter.webconfig import load_web_config
from tests.conftest import ScratchDatabase, admin, free_port, key, parse_samples, write
from tests.helpers import fetch, sha, start, stop, two_tenants, until, wait_ready
from tests.tls_helpers import make_ca, make_cert

OPS, ACME = "ops-token-reload-1", "acme-token-reload-2"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two CAs; a server certificate; clients with SAN good.example and bad.example."""
    directory = tmp_path_factory.mktemp("certs")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")
    make_cert(directory, "server", "ca", "subjectAltName=IP:127.0.0.1")
    for name in ("good", "bad"):
        make_cert(directory, name, "ca", f"subjectAltName=DNS:{name}.example")
    (directory / "both-cas.crt").write_text(
        (directory / "ca.crt").read_text() + (directory / "other-ca.crt").read_text()
    )
    return directory


def tls_section(certs: Path, cas: str = "both-cas.crt") -> str:
    return f"""tls_server_config:
  cert_file: {certs / "server.crt"}
  key_file: {certs / "server.key"}
  client_ca_file: {certs / cas}
  client_auth_type: RequireAndVerifyClientCert
  client_allowed_sans: [good.example]
"""


def tokens(users: str = "") -> str:
    return (f"bearer_tokens:\n  - {{name: ops, sha256: {sha(OPS)}}}\n"
            f"  - {{name: acme-grafana, sha256: {sha(ACME)}, tenants: [acme, initech]}}\n"
            + users)  # fmt: skip


def client(certs: Path, name: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(certs / f"{name}.crt", certs / f"{name}.key")
    return context


async def call(url: str, certs: Path, who: str, method: str = "GET", token: str = OPS) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers, ssl=client(certs, who)) as response,
    ):
        return response.status


async def test_a_reload_that_removes_tls_applies_nothing(
    database: ScratchDatabase, make_exporter, tmp_path: Path, certs: Path
) -> None:
    """The web config loses its TLS section and gains a user in the same edit: /-/reload
    answers 400 with the reason, the reload metric says 0, the SAN check still refuses
    bad.example (403) and the new user does not get in: nothing of it applied."""
    web = write(tmp_path / "web.yaml", tls_section(certs) + tokens())
    running = await make_exporter(two_tenants(database.dsn), web_config=load_web_config(web),
                                  web_config_file=web, enable_reload=True)  # fmt: skip
    url = running.url
    assert await call(url + "/metrics", certs, "good") == 200
    assert await call(url + "/metrics", certs, "bad") == 403
    new_hash = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web.write_text(tokens(f"basic_auth_users: {{newbie: '{new_hash}'}}\n"))
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/-/reload", headers={"Authorization": f"Bearer {OPS}"},
                     ssl=client(certs, "good")) as response,
    ):  # fmt: skip
        assert response.status == 400
        reason = await response.text()
    assert "turning it off needs a restart" in reason and "nothing was changed" in reason
    assert await call(url + "/metrics", certs, "bad") == 403
    assert await call(url + "/metrics", certs, "good") == 200
    assert running.exporter.web_config.basic_auth_users is None
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/metrics", headers={"Authorization": f"Bearer {OPS}"},
                    ssl=client(certs, "good")) as response,
    ):  # fmt: skip
        samples = parse_samples(await response.text())
    assert samples[key("cockpit_exporter_config_last_reload_successful")] == 0


async def test_a_reload_that_drops_a_client_ca_is_refused_and_adding_one_applies(
    database: ScratchDatabase, make_exporter, tmp_path: Path, certs: Path
) -> None:
    """A live TLS context can gain CAs but not lose one: dropping one is refused (the old
    trust stays whole); SAN changes apply to the next request."""
    web = write(tmp_path / "web.yaml", tls_section(certs, "both-cas.crt") + tokens())
    running = await make_exporter(two_tenants(database.dsn), web_config=load_web_config(web),
                                  web_config_file=web)  # fmt: skip
    web.write_text(tls_section(certs, "ca.crt") + tokens())
    problems = await running.exporter.reload()
    assert any("1 client CA certificate(s) the listener trusts are gone" in p for p in problems)
    web.write_text(tls_section(certs).replace("[good.example]", "[bad.example]") + tokens())
    assert await running.exporter.reload() == []
    assert await call(running.url + "/metrics", certs, "bad") == 200
    assert await call(running.url + "/metrics", certs, "good") == 403


async def test_tokens_may_name_tenants_discovery_has_not_found_yet(
    database: ScratchDatabase, make_exporter, tmp_path: Path
) -> None:
    """A token scoped to acme and initech while only acme and globex exist: the exporter
    starts (a warning, a gauge of 1 unknown tenant for that token), the token sees acme only;
    once initech appears (a reload here; discovery applies it the same way) the gauge drops
    to 0 and the token sees initech too, and still never globex."""
    web = write(tmp_path / "web.yaml", tokens())
    config = write(tmp_path / "c.yaml", two_tenants(database.dsn))
    database.execute(
        "INSERT INTO work_items VALUES (1,'b','new',1),(2,'b','new',1),(3,'b','new',1)"
    )
    running = await make_exporter(config.read_text(), web_config=load_web_config(web),
                                  web_config_file=web, config=config)  # fmt: skip
    ops = {"Authorization": f"Bearer {OPS}"}
    acme = {"Authorization": f"Bearer {ACME}"}
    samples = parse_samples(await running.scrape(headers=ops))
    assert samples[key("cockpit_exporter_token_unknown_tenants", token="acme-grafana")] == 1
    await running.run_all()
    tenants = {dict(k[1]).get("tenant") for k in parse_samples(await running.scrape(headers=acme))}
    assert tenants == {"acme", None}
    initech = f"  - {{id: initech, mysql: {{dsn: '{database.dsn}'}}, params: {{tenant_id: 3}}}}\n"
    config.write_text(two_tenants(database.dsn).replace("queries:", initech + "queries:"))
    assert await running.exporter.reload() == []
    await running.run_all()
    samples = parse_samples(await running.scrape(headers=ops))
    assert samples[key("cockpit_exporter_token_unknown_tenants", token="acme-grafana")] == 0
    tenants = {dict(k[1]).get("tenant") for k in parse_samples(await running.scrape(headers=acme))}
    assert tenants == {"acme", "initech", None}


def test_the_real_command_starts_with_a_token_scoped_to_a_discovered_tenant(
    make_database, tmp_path: Path
) -> None:
    """`cockpit-exporter --config …` with tenant_discovery (acme in the registry, no static
    tenant) and a token scoped to acme and zeta: it starts (no exit 2), warns naming zeta,
    and the token sees acme's series."""
    registry, data = make_database(), make_database()
    registry.execute("CREATE TABLE tenants (slug VARCHAR(80), db VARCHAR(80))",
                     f"INSERT INTO tenants VALUES ('acme', '{data.name}')")  # fmt: skip
    data.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (7)")
    config = write(
        tmp_path / "c.yaml",
        f"""
tenant_discovery:
  dsn: mysql://root@127.0.0.1:3306/{registry.name}
  sql: SELECT slug AS id, db AS `database` FROM tenants
  mysql: {{dsn: 'mysql://root@127.0.0.1:3306/{{database}}'}}
queries:
  - {{name: v, sql: SELECT v FROM t, interval: 1s, timeout: 1s, stale_after: 10s,
     metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]}}
""",
    )
    web = write(tmp_path / "web.yaml", f"bearer_tokens:\n  - {{name: acme-grafana,"
                f" sha256: {sha(ACME)}, tenants: [acme, zeta]}}\n")  # fmt: skip
    port = free_port()
    process = start(
        "--config",
        str(config),
        "--web.config.file",
        str(web),
        "--web.listen-address",
        f"127.0.0.1:{port}",
        "--log.format",
        "logfmt",
    )

    def scraped() -> dict:
        return parse_samples(fetch(port, headers={"Authorization": f"Bearer {ACME}"}))

    try:
        wait_ready(port, process)
        # A first run that timed out on a loaded machine is followed by one a second later.
        found = until(lambda: scraped().get(key("cockpit_v", tenant="acme")), 20, step=0.5)
    finally:
        code, output = stop(process)
    assert code == 0, output
    assert found == 7
    warning = next(line for line in output.splitlines() if "scoped tenants not known" in line)
    assert "name=acme-grafana" in warning and "zeta" in warning and "acme'" not in warning


@pytest.mark.parametrize(
    "broken",
    [
        "basic_auth_users:\n  ops: '$2b$10$v/ehy2X4SecretHashText\n",  # unterminated quote
        "basic_auth_users: *SecretAliasText\n",  # PyYAML quotes the alias name
        'basic_auth_users: {ops: "\\qSecretEscapeText"}\n',  # and the bad escape
        b"basic_auth_users: {ops: '\xffSecret'}\n",  # not UTF-8
    ],
)
async def test_a_broken_web_config_is_reported_without_its_text(
    database: ScratchDatabase, make_exporter, tmp_path: Path, broken: str | bytes
) -> None:
    """A web config that is not YAML (or not UTF-8) fails the reload with its line and
    column, never its text, in the answer and in the log."""
    web = write(tmp_path / "web.yaml", tokens())
    running = await make_exporter(two_tenants(database.dsn), web_config=load_web_config(web),
                                  web_config_file=web)  # fmt: skip
    if isinstance(broken, bytes):
        web.write_bytes(broken)
    else:
        web.write_text(broken)
    with structlog.testing.capture_logs() as logs:
        problems = await running.exporter.reload()
    assert problems and "Secret" not in repr(problems) and "Secret" not in repr(logs)
    assert "invalid YAML" in problems[0] or "not UTF-8" in problems[0]


async def test_a_corrected_password_file_is_used_without_a_reload(
    database: ScratchDatabase, make_exporter, tmp_path: Path
) -> None:
    """A tenant whose password file was wrong recovers once the file is fixed: the watcher
    sees the change, the config reloads by itself, the next run connects."""
    user = f"ck_{uuid.uuid4().hex[:10]}"
    admin(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right'",
          f"GRANT SELECT ON {database.name}.* TO '{user}'@'%'")  # fmt: skip
    try:
        database.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (7)")
        secret = write(tmp_path / "db.secret", "wrong\n")
        secret.chmod(0o600)
        dsn = f"mysql://{user}@127.0.0.1:3306/{database.name}"
        config = write(
            tmp_path / "config.yaml",
            f"tenants:\n  - {{id: a, mysql: {{dsn: '{dsn}', password_file: {secret}}}}}\n"
            "queries:\n  - {name: v, sql: SELECT v FROM t, metrics: "
            "[{name: cockpit_v, type: gauge, help: V., value: v}]}\n",
        )
        exporter = await make_exporter(config.read_text(), config=config)
        await exporter.run("a", "v")
        assert exporter.stats("a", "sql", "v").errors["connect"] == 1
        watch = exporter.exporter.secrets
        await watch.check()
        assert watch.changes == 0  # nothing changed: no reload
        secret.write_text("right\n")
        os.utime(secret, ns=(time.time_ns(), time.time_ns() + 1_000_000))
        await watch.check()
        await exporter.run("a", "v")
        samples = await exporter.samples()
    finally:
        admin(f"DROP USER IF EXISTS '{user}'@'%'")
    assert samples[key("cockpit_v", tenant="a")] == 7
    assert samples[("cockpit_exporter_secret_file_changes_total", frozenset())] == 1
    assert exporter.stats("a", "sql", "v").errors["connect"] == 1  # totals carried on
