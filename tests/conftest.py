"""Shared fixtures: real MariaDB databases, config files and in-process exporters."""

import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pymysql
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import Exporter
from exporter.config import Config, parse_config
from exporter.selfmetrics import JobStats
from exporter.settings import Settings
from exporter.sources.base import Job
from tests import platform_helpers

MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}


@dataclass
class ScratchDatabase:
    """A uniquely named MariaDB database, dropped after the test."""

    name: str

    @property
    def dsn(self) -> str:
        return f"mysql://root@127.0.0.1:3306/{self.name}"

    def execute(self, *statements: str) -> None:
        conn = pymysql.connect(**MARIADB, database=self.name, autocommit=True)
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()


def admin(*statements: str) -> list[tuple[Any, ...]]:
    """Run statements as root outside any test database; returns the last result."""
    conn = pymysql.connect(**MARIADB, autocommit=True)
    try:
        with conn.cursor() as cursor:
            rows: list[tuple[Any, ...]] = []
            for statement in statements:
                cursor.execute(statement)
                rows = list(cursor.fetchall())
            return rows
    finally:
        conn.close()


@pytest.fixture
def make_database() -> Iterator[Callable[[], ScratchDatabase]]:
    """Factory of fresh databases; all are dropped at teardown."""
    created: list[str] = []

    def make() -> ScratchDatabase:
        name = f"cockpit_test_{uuid.uuid4().hex[:12]}"
        admin(f"CREATE DATABASE {name}")
        created.append(name)
        return ScratchDatabase(name)

    yield make
    for name in created:
        admin(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def database(make_database: Callable[[], ScratchDatabase]) -> ScratchDatabase:
    """One fresh database with a work_items table."""
    db = make_database()
    db.execute(
        "CREATE TABLE work_items (tenant_id INT, queue VARCHAR(50), status VARCHAR(20),"
        " weight DECIMAL(10,2))"
    )
    return db


# Sockets holding the ports free_port() handed out. A port merely checked and closed could be
# taken before its server binds it (a subprocess binds seconds later): by another test's
# free_port(), whose server then answered in its place, or as the source port of one of the
# thousands of connections the hostile tests open. A bound socket with SO_REUSEADDR that
# never listens keeps the kernel from handing the port out again, while a server that sets
# SO_REUSEADDR (asyncio, aiohttp, http.server and Go all do) can still bind and listen there.
_RESERVED: deque[socket.socket] = deque()
_KEPT = 64  # a server binds within seconds; the oldest reservations are let go


def free_port() -> int:
    """A loopback port nobody listens on, held for a server that sets SO_REUSEADDR."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    _RESERVED.append(sock)
    if len(_RESERVED) > _KEPT:
        _RESERVED.popleft().close()
    return int(sock.getsockname()[1])


class RunningExporter:
    """An exporter started in this event loop, scraped over real HTTP."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    @property
    def url(self) -> str:
        tls = self.exporter.web_config.tls_server_config is not None
        return f"{'https' if tls else 'http'}://127.0.0.1:{self.exporter.port}"

    def job(self, tenant: str, name: str, kind: str = "sql") -> Job:
        jobs = self.exporter.runner.jobs()
        return next(j for j in jobs if (j.tenant, j.kind, j.name) == (tenant, kind, name))

    async def run(self, tenant: str, query: str) -> None:
        await self.exporter.run_job(self.job(tenant, query))

    async def run_all(self) -> None:
        """Run every SQL job once (platform polls need a simulator: tests poll them)."""
        for job in self.exporter.runner.jobs():
            if job.kind == "sql":
                await self.exporter.run_job(job)

    def stats(self, tenant: str, source: str, query: str) -> JobStats:
        """The self-metrics of one part of one job."""
        return next(
            s
            for s in self.exporter.runner.stats
            if (s.tenant, s.source, s.query) == (tenant, source, query)
        )

    async def get(
        self, path: str = "/metrics", decompress: bool = True, **kwargs: Any
    ) -> aiohttp.ClientResponse:
        async with aiohttp.ClientSession(auto_decompress=decompress) as session:
            response = await session.get(self.url + path, **kwargs)
            await response.read()
            return response

    async def scrape(self, path: str = "/metrics", **kwargs: Any) -> str:
        response = await self.get(path, **kwargs)
        assert response.status == 200, await response.text()
        return await response.text()

    async def samples(self, **kwargs: Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_samples(await self.scrape(**kwargs))


def parse_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a text-format exposition, keyed by name and label set."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """A sample key as parse_samples builds it; `class_` stands for the label `class`."""
    return (name, frozenset((k.removesuffix("_"), v) for k, v in labels.items()))


@pytest.fixture
async def make_exporter(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Callable[..., Any]]:
    """Factory starting an exporter on a free port from YAML text (not scheduled by default)."""
    started: list[Exporter] = []

    async def make(
        config_text: str, schedule: bool = False, web_config: Any = None, **settings: Any
    ) -> RunningExporter:
        config: Config = parse_config(config_text, "test")
        settings.setdefault("state_dir", tmp_path_factory.mktemp("state"))
        exporter = Exporter(config, Settings(listen_address="127.0.0.1:0", **settings), web_config)
        await exporter.start(schedule=schedule)
        started.append(exporter)
        return RunningExporter(exporter)

    yield make
    for exporter in started:
        await exporter.stop()


@pytest.fixture
async def manual_sim() -> AsyncIterator[platform_helpers.RunningSimulator]:
    """One simulated tenant whose platform clock moves only when the test moves it."""
    clock = platform_helpers.ManualClock(time.time())
    running = await platform_helpers.start(1, clock=clock)
    running.clock = clock  # type: ignore[attr-defined]
    yield running
    await running.runner.cleanup()


def write(path: Path, text: str) -> Path:
    """Write text and return the path (for config and secret files)."""
    path.write_text(text, encoding="utf-8")
    return path


# Tests write only to temporary directories: the work tree looks the same after the suite
# (caches of the tools aside). Checked once, by the process that runs the session.
_CACHES = (".pytest_cache", "__pycache__", ".mypy_cache", ".ruff_cache", ".venv", ".egg-info")
_ROOT = Path(__file__).resolve().parent.parent
_TREE = pytest.StashKey[set[str] | None]()


def _work_tree() -> set[str] | None:
    """Paths git sees as changed, new or ignored, caches left out; None outside a checkout."""
    import subprocess

    try:
        found = subprocess.run(
            ["git", "-C", str(_ROOT), "status", "--porcelain", "--ignored",
             "--untracked-files=all"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    paths = {line[3:] for line in found.stdout.splitlines()}
    return {p for p in paths if not any(part in p for part in _CACHES)}


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_TREE] = _work_tree()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput") or session.config.option.collectonly:
        return
    before, after = session.config.stash.get(_TREE, None), _work_tree()
    if before is None or after is None or after <= before:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"tests wrote into the work tree: {sorted(after - before)}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
