"""`make stack`: docker-compose.yml's topology as local processes, from the same files."""

import json
import random
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter.stack import mariadb
from exporter.stack.processes import DEBIAN, SKIPPED
from exporter.stack.secrets import generate
from exporter.stack.topology import load, materialise
from tests.conftest import admin
from tests.helpers import until

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"


def free_offset() -> int:
    """A port offset at which every published compose port is free on loopback."""
    ports = [p for _, p in load(COMPOSE, 0).ports.values()]
    # Every port stays below the kernel's ephemeral range (32768 up): there, the outgoing
    # connections and free_port() of tests running beside this one took a port between this
    # check and the service's bind (Alertmanager then exited "address already in use").
    highest = 32768 - max(ports)
    for _ in range(50):
        offset = random.randrange(10000, highest)
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return offset
    raise AssertionError("no free port offset")


@pytest.fixture
def names() -> Iterator[mariadb.Names]:
    """A database and user of the test's own, dropped afterwards."""
    name = f"cockpit_stack_{uuid.uuid4().hex[:10]}"
    yield mariadb.Names(name, name)
    admin(f"DROP DATABASE IF EXISTS {name}", f"DROP USER IF EXISTS '{name}'@'%'")


def prometheus(offset: int, path: str, **query: str) -> dict:
    url = f"http://127.0.0.1:{9090 + offset}{path}?{urllib.parse.urlencode(query)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


def test_the_stack_runs_the_compose_topology_and_stops_gracefully(
    tmp_path: Path, names: mariadb.Names
) -> None:
    """Every compose service but Grafana's runs locally from the compose files: Prometheus
    scrapes the exporter, which reads the seeded MariaDB rows and the simulator's tenants,
    loads the cockpit's rules and sends to the Alertmanager. Ctrl-C stops each service once,
    gracefully, in reverse order."""
    offset = free_offset()
    stack = subprocess.Popen(
        [sys.executable, "-m", "exporter.stack", "--compose", str(COMPOSE), "--run-dir",
         str(tmp_path), "--port-offset", str(offset), "--database", names.database,
         "--db-user", names.user, "--secrets-dir", str(tmp_path / "secrets")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        lines = []
        for line in stack.stdout:
            lines.append(line)
            if "stack ready" in line or "stack:" in line:
                break
        assert "stack ready" in lines[-1], "".join(lines)
        assert sum("stack service skipped" in line for line in lines) == len(SKIPPED)

        def collected() -> dict:
            result = prometheus(offset, "/api/v1/query", query="cockpit_collection_success")
            return {
                (r["metric"]["tenant"], r["metric"]["query"]): r["value"][1]
                for r in result["result"]
            }

        def all_ok() -> dict:
            now = collected()
            return now if len(now) == 10 and set(now.values()) == {"1"} else {}

        # A loaded machine may fail a first poll: the next one must succeed.
        assert until(all_ok, 120), (collected(), (tmp_path / "exporter.log").read_text()[-3000:])
        items = prometheus(offset, "/api/v1/query", query="cockpit_work_items")["result"]
        seeded = {
            (r["metric"]["tenant"], r["metric"]["queue"], r["metric"]["status"]) for r in items
        }
        assert seeded == {
            ("t0001", "billing", "new"),
            ("t0001", "billing", "done"),
            ("t0002", "reports", "new"),
        }
        rules = prometheus(offset, "/api/v1/rules")["groups"]
        committed = yaml.safe_load((ROOT / "alerts" / "cockpit.rules.yml").read_text())
        assert sorted(g["name"] for g in rules) == sorted(g["name"] for g in committed["groups"])
        managers = prometheus(offset, "/api/v1/alertmanagers")["activeAlertmanagers"]
        assert [m["url"] for m in managers] == [f"http://127.0.0.1:{9093 + offset}/api/v2/alerts"]
        stack.send_signal(signal.SIGINT)
        rest = stack.communicate(timeout=60)[0]
    finally:
        if stack.poll() is None:  # a failed assertion: stop it as Ctrl-C would, then harder
            stack.send_signal(signal.SIGINT)
            try:
                stack.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stack.kill()
    assert stack.returncode == 0, rest
    stopped = re.findall(r"msg=\"stack service stopped\" service=(\S+) code=(-?\d+)", rest)
    assert stopped == [
        ("prometheus", "0"),
        ("alertmanager", "0"),
        ("exporter", "0"),
        ("simulator", "0"),
    ]
    assert '"event": "exporter stopped"' in (tmp_path / "exporter.log").read_text()
    # What the stack made on the shared MariaDB is gone with it, and so is its record.
    assert admin(f"SHOW DATABASES LIKE '{names.database}'") == []
    assert admin(f"SELECT 1 FROM mysql.user WHERE User = '{names.user}'") == []
    assert not (tmp_path / "created.json").exists()


def test_services_do_not_outlive_a_killed_stack(tmp_path: Path, names: mariadb.Names) -> None:
    """SIGKILL leaves the stack no chance to stop anything: its services still go (each
    asked the kernel for a SIGTERM when the stack dies)."""
    stack = subprocess.Popen(
        [sys.executable, "-m", "exporter.stack", "--compose", str(COMPOSE), "--run-dir",
         str(tmp_path), "--port-offset", str(free_offset()), "--database", names.database,
         "--db-user", names.user, "--secrets-dir", str(tmp_path / "secrets")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
    )  # fmt: skip
    pids = []
    for line in stack.stdout:
        pids += [int(p) for p in re.findall(r"pid=(\d+)", line)]
        if "stack ready" in line or "stack:" in line:
            break
    assert len(pids) == 4, pids
    stack.kill()
    stack.wait(timeout=10)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and "Z" not in state(pid) for pid in pids)

    assert until(gone, 20), [(pid, state(pid)) for pid in pids]
    # Killed, it could not drop its database and user: `--clean` (what `make clean` runs)
    # drops them from its record.
    assert admin(f"SHOW DATABASES LIKE '{names.database}'") != []
    cleaned = subprocess.run(
        [sys.executable, "-m", "exporter.stack", "--clean", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, check=False, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert admin(f"SHOW DATABASES LIKE '{names.database}'") == []
    assert admin(f"SELECT 1 FROM mysql.user WHERE User = '{names.user}'") == []


def state(pid: int) -> str:
    """The process state letter, or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_mariadb_is_seeded_once_as_the_image_does(tmp_path: Path, names: mariadb.Names) -> None:
    """The compose database and user are created with the compose password; init.sql runs in
    the new database only: a second start neither fails nor inserts the rows again."""
    generate(tmp_path / "secrets")
    topology = load(COMPOSE, 0, tmp_path / "secrets")
    materialise(topology, ["mariadb"], tmp_path)
    server = mariadb.Server.parse("mysql://root@127.0.0.1:3306")
    assert mariadb.prepare(topology, "mariadb", server, names) == mariadb.Created(True, True)
    assert mariadb.prepare(topology, "mariadb", server, names) == mariadb.Created(False, False)
    rows = admin(f"SELECT COUNT(*) FROM {names.database}.work_items")
    assert rows == [(3,)]
    password = (tmp_path / "secrets" / "db_password").read_text().strip()
    import pymysql

    login = pymysql.connect(
        host="127.0.0.1", user=names.user, password=password, database=names.database
    )
    login.close()


def test_rewrites_name_services_not_longer_names() -> None:
    """`exporter:9610` becomes the local port; `my-exporter:9610` and `exporter:96100` stay."""
    topology = load(COMPOSE, 7)
    text = "a exporter:9610/b my-exporter:9610 x.exporter:9610 http://exporter:9610"
    assert topology.rewrite(text) == (
        "a 127.0.0.1:9617/b my-exporter:9610 x.exporter:9610 http://127.0.0.1:9617"
    )


def test_every_compose_service_has_a_local_counterpart_or_a_reason() -> None:
    """A new compose service fails this test until the stack runs it or says why not; the
    Debian binaries are the versions compose pins."""
    services = load(COMPOSE, 0).services
    assert set(SKIPPED) <= set(services)
    for name, spec in services.items():
        image = str(spec.get("image", ""))
        known = (
            name in SKIPPED
            or name == "mariadb"
            or "build" in spec
            or image.rsplit(":", 1)[0] in DEBIAN
        )
        assert known, name
        if image.rsplit(":", 1)[0] in DEBIAN:
            binary = DEBIAN[image.rsplit(":", 1)[0]][0]
            version = subprocess.run(
                [binary, "--version"], capture_output=True, text=True, check=True
            )
            pinned = image.rsplit(":", 1)[1].removeprefix("v")
            assert f"version {pinned}" in version.stdout + version.stderr, (name, version.stdout)


@pytest.mark.parametrize(
    ("compose", "message"),
    [
        ("services: {exporter: {build: .}}\n", "no mariadb service"),
        ("services: {mariadb: {ports: ['x:3306']}}\n", "is not HOST:CONTAINER"),
        ("services: [", "docker-compose.yml"),
    ],
)
def test_a_compose_file_the_stack_cannot_run_is_named(
    tmp_path: Path, compose: str, message: str
) -> None:
    """Exit 1 with what is wrong with the file, before anything starts."""
    (tmp_path / "docker-compose.yml").write_text(compose)
    result = subprocess.run(
        [sys.executable, "-m", "exporter.stack", "--compose", str(tmp_path / "docker-compose.yml"),
         "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
