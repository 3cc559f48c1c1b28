"""Every error path an attacker or a user can reach, with marker secrets, in every log format:
no marker ever reaches the logs (the real command, at debug level)."""

import base64
import hashlib
import re
import socket
import sqlite3
import uuid
from pathlib import Path

import bcrypt
import pytest

from tests.conftest import free_port
from tests.helpers import fetch, start, stop, wait_ready

# `suppressed=2` (console, logfmt) or `"suppressed": 2` (JSON).
SUPPRESSED = re.compile(r'suppressed"?[=:] ?(\d+)')


def raw_request(port: int, data: bytes) -> bytes:
    """Send bytes as they are (no client library would send these) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def ask(port: int, head: str | bytes) -> int:
    """The status of a request whose first lines are `head` (Host and close added)."""
    data = head if isinstance(head, bytes) else head.encode()
    answer = raw_request(port, data + b"\r\nHost: t\r\nConnection: close\r\n\r\n")
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("fmt", ["console", "logfmt", "json"])
def test_no_secret_reaches_any_log_format(tmp_path: Path, fmt: str) -> None:
    """Long passwords, long garbage credentials, tokens in malformed requests, undecodable
    bytes, schemeless tokens and secrets in paths: 401/400/404 answers, and the markers
    appear in no log line."""
    password = f"pw-{uuid.uuid4().hex}" * 3  # 105 bytes: past bcrypt's 72
    token, scoped = f"tok-{uuid.uuid4().hex}", f"scoped-{uuid.uuid4().hex}"
    garbage = f"garbage-{uuid.uuid4().hex}" * 4
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    sha = hashlib.sha256
    (tmp_path / "web.yaml").write_text(
        f"basic_auth_users: {{ops: '{hashed}'}}\n"
        f"bearer_tokens:\n  - {{name: ops, sha256: {sha(token.encode()).hexdigest()}}}\n"
        f"  - {{name: demo, sha256: {sha(scoped.encode()).hexdigest()}, tenants: [demo]}}\n"
    )
    sqlite3.connect(tmp_path / "d.db").close()  # SQLite files are opened, never created
    (tmp_path / "config.yaml").write_text(
        f"tenants:\n  - {{id: demo, mysql: {{dsn: 'sqlite:///{tmp_path}/d.db'}}}}\n"
        "queries:\n  - {name: one, sql: SELECT 1 AS n, interval: 5s, timeout: 2s,\n"
        "     metrics: [{name: cockpit_one, type: gauge, help: One., value: n}]}\n"
    )
    port = free_port()
    process = start(
        "--config", str(tmp_path / "config.yaml"),
        "--web.config.file", str(tmp_path / "web.yaml"),
        "--web.listen-address", f"127.0.0.1:{port}",
        "--log.level", "debug", "--log.format", fmt,
    )  # fmt: skip
    basic = base64.b64encode(f"ops:{password}".encode()).decode()
    long_basic = base64.b64encode(f"ops:{garbage}".encode()).decode()
    try:
        wait_ready(port, process)
        assert "cockpit_one" in fetch(port, headers={"Authorization": f"Basic {basic}"})
        answers = [
            ask(port, f"GET /metrics HTTP/1.1\r\nAuthorization: Basic {long_basic}"),
            ask(port, f"GET /metrics HTTP/1.1 {token}\r\nAuthorization: Bearer {token}"),
            ask(port, f"GET /metrics HTTP/1.1\r\nAuthorization: Bearer {scoped}\x01"),
            ask(port, b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer \xff"),
            ask(port, f"GET /metrics HTTP/1.1\r\nAuthorization: {token}"),
            ask(port, f"GET /{token} HTTP/1.1\r\nAuthorization: Bearer {token}"),
        ]
    finally:
        code, output = stop(process)
    assert answers == [401, 400, 400, 401, 401, 404]
    # Three refusals, sampled per reason: a line for the first wrong credential and one for
    # the schemeless (malformed) one; the second wrong one has a line of its own, or is
    # counted by the next line or by the report at shutdown (within a second of the first).
    lines = [line for line in output.splitlines() if "authentication failed" in line]
    refusals = [line for line in lines if "log lines left out" not in line]
    suppressed = sum(int(n) for line in lines for n in SUPPRESSED.findall(line))
    assert len(refusals) >= 2 and len(refusals) + suppressed == 3, lines
    assert "bad http request" in output
    for marker in (password, token, scoped, garbage, basic, long_basic, hashed, hashed[7:]):
        assert marker not in output and marker[:16] not in output, (fmt, marker[:12])
    assert code == 0, output


@pytest.mark.parametrize("fmt", ["console", "logfmt", "json"])
def test_the_registry_password_reaches_no_log_page_or_metric(
    tmp_path: Path, fmt: str, make_database
) -> None:
    """A registry refusing its password (a marker) fails discovery visibly, at debug level in
    every format, without the password in the log, on the landing page or in /metrics."""
    registry = make_database()
    marker = f"registry-pw-{uuid.uuid4().hex}"
    (tmp_path / "config.yaml").write_text(
        "tenant_discovery:\n"
        f"  dsn: mysql://root@127.0.0.1:3306/{registry.name}\n"
        "  password_env: COCKPIT_TEST_REGISTRY_PW\n"
        "  sql: SELECT 'a' AS id, 'b' AS `database`\n"
        "  mysql: {dsn: 'mysql://root@127.0.0.1:3306/{database}'}\n"
        "tenants: []\n"
    )
    port = free_port()
    process = start(
        "--config", str(tmp_path / "config.yaml"), "--web.listen-address", f"127.0.0.1:{port}",
        "--log.level", "debug", "--log.format", fmt,
        env={"COCKPIT_TEST_REGISTRY_PW": marker},
    )  # fmt: skip
    try:
        wait_ready(port, process)
        metrics, page = fetch(port), fetch(port, "/")
    finally:
        _, output = stop(process)
    assert "cockpit_exporter_discovery_success 0" in metrics
    assert "tenant discovery failed" in output and "Access denied" in output, output[-2000:]
    for where, text in (("log", output), ("metrics", metrics), ("landing page", page)):
        assert marker not in text and marker[:20] not in text, (fmt, where)
