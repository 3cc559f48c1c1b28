"""The real command: demo, run with secrets from files, SIGTERM, and what reaches logs."""

import base64
import hashlib
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import bcrypt

from tests.conftest import ScratchDatabase, admin, free_port, parse_samples
from tests.helpers import fetch, start, stop, wait_ready


def test_demo_serves_three_tenants() -> None:
    """`cockpit-exporter demo` needs no MySQL and serves three tenants' SQL and platform
    metrics, and acme's agents a second time through the http_json source (same count)."""
    port, simulator = free_port(), free_port()
    process = start("demo", "--web.listen-address", f"127.0.0.1:{port}",
                    "--simulator-port", str(simulator))  # fmt: skip
    try:
        wait_ready(port, process)
        samples = parse_samples(fetch(port))
        assert '"finished"' in fetch(simulator, "/admin/tenants/acme/stats")  # where it was told
    finally:
        code, output = stop(process)
    for metric in ("cockpit_work_items", "cockpit_agent_up", "cockpit_runs_finished_total"):
        tenants = {dict(labels).get("tenant") for name, labels in samples if name == metric}
        assert tenants == {"acme", "globex", "initech"}, metric
    by_version = [v for (n, _), v in samples.items() if n == "cockpit_demo_agents_by_version"]
    acme_agents = [k for k in samples if k[0] == "cockpit_agent_up" and ("tenant", "acme") in k[1]]
    assert by_version and sum(by_version) == len(acme_agents)
    assert code == 0, output
    assert f"http://127.0.0.1:{port}/" in output


def test_secrets_never_reach_logs_or_metrics(make_database, tmp_path: Path) -> None:
    """A real run (config from COCKPIT_CONFIG) with file and env database passwords (one
    wrong), a basic auth password and a bearer token (plus wrong ones presented): no secret
    appears in the logs, /metrics or the landing page."""
    db: ScratchDatabase = make_database()
    db.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (3)")
    user = f"ck_{uuid.uuid4().hex[:8]}"
    good, wrong = f"good-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    admin(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY '{good}'",
        f"GRANT SELECT ON {db.name}.* TO '{user}'@'%'",
    )
    try:
        secret = tmp_path / "db-password"
        secret.write_text(good + "\n")
        config = tmp_path / "config.yaml"
        dsn = f"mysql://{user}@127.0.0.1:3306/{db.name}"
        config.write_text(
            f"""
tenants:
  - {{id: good, mysql: {{dsn: '{dsn}', password_file: {secret}}}}}
  - {{id: bad, mysql: {{dsn: '{dsn}', password_env: BAD_DB_PASSWORD}}}}
queries:
  - name: t
    sql: SELECT v FROM t
    interval: 1s
    timeout: 1s
    stale_after: 10s  # gauges stay while a loaded machine runs late
    metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]
"""
        )
        web = tmp_path / "web.yaml"
        basic_password, token = f"pw-{uuid.uuid4().hex}", f"tok-{uuid.uuid4().hex}"
        hashed = bcrypt.hashpw(basic_password.encode(), bcrypt.gensalt(rounds=4)).decode()
        digest = hashlib.sha256(token.encode()).hexdigest()
        web.write_text(
            f"basic_auth_users: {{ops: '{hashed}'}}\n"
            f"bearer_tokens: [{{name: grafana, sha256: {digest}}}]\n"
        )
        authorized = {"Authorization": f"Bearer {token}"}
        port = free_port()
        process = start(
            "--web.config.file",
            str(web),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "debug",
            "--log.format",
            "json",
            env={"BAD_DB_PASSWORD": wrong, "COCKPIT_CONFIG": str(config)},
        )
        try:
            wait_ready(port, process)
            metrics, landing = fetch(port, headers=authorized), fetch(port, "/", authorized)
            basic = base64.b64encode(f"ops:{basic_password}".encode()).decode()
            assert "cockpit_v" in fetch(port, headers={"Authorization": f"Basic {basic}"})
            for presented in (f"Bearer {wrong}", f"Basic {basic}x"):
                try:
                    fetch(port, headers={"Authorization": presented})
                except urllib.error.HTTPError as exc:
                    assert exc.code == 401
                else:
                    raise AssertionError("a wrong credential must be refused")
        finally:
            code, output = stop(process)
    finally:
        admin(f"DROP USER '{user}'@'%'")
    samples = parse_samples(metrics)
    assert samples[("cockpit_v", frozenset({("tenant", "good")}))] == 3
    assert (
        samples[
            (
                "cockpit_collection_errors_total",
                frozenset(
                    {("tenant", "bad"), ("source", "sql"), ("query", "t"), ("reason", "connect")}
                ),
            )
        ]
        >= 1
    )
    assert "Access denied" in output
    for text in (metrics, landing, output):
        for secret_value in (good, wrong, basic_password, token, basic):
            assert secret_value not in text
    assert '"principal": "grafana"' in output
    assert code == 0, output
    assert '"event": "exporter stopped"' in output
