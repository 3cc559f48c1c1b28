"""`cockpit-exporter demo`: three tenants with SQLite data and a simulated platform API."""

import asyncio
import contextlib
import random
import signal
import sqlite3
import tempfile
import time
from pathlib import Path

import structlog
import yaml

from exporter.app import Exporter, ListenError
from exporter.config import parse_config
from exporter.exitcodes import fail
from exporter.settings import Settings
from exporter.simulator.main import platform_blocks, start_simulator
from exporter.simulator.server import Simulator

log = structlog.get_logger(__name__)
TENANTS = ("acme", "globex", "initech")
QUEUES = ("billing", "onboarding", "reports")
STATUSES = ("new", "in_progress", "done", "failed")
_MUTATE_EVERY = 2.0

# WAL lets the exporter's readers and the demo's writer work without blocking each other.
_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS work_items (
    id INTEGER PRIMARY KEY, tenant_id INTEGER, queue TEXT, status TEXT, created_at REAL);
CREATE TABLE IF NOT EXISTS queue_stats (
    tenant_id INTEGER, queue TEXT PRIMARY KEY, processed INTEGER);
"""

CONFIG = """
defaults: {{interval: 5s, timeout: 2s}}
tenants:
{tenants}
queries:
  - name: work_items
    sql: >-
      SELECT queue, status, COUNT(*) AS items FROM work_items
      WHERE tenant_id = :tenant_id GROUP BY queue, status
    metrics:
      - {{name: cockpit_work_items, type: gauge, labels: [queue, status], value: items,
          help: Work items by queue and status.}}
  - name: queue_stats
    interval: 10s
    sql: >-
      SELECT q.queue, q.processed,
             (SELECT MIN(w.created_at) FROM work_items w
              WHERE w.queue = q.queue AND w.status = 'new') AS oldest_new
      FROM queue_stats q WHERE q.tenant_id = :tenant_id
    metrics:
      - {{name: cockpit_items_processed_total, type: counter, labels: [queue], value: processed,
          help: Work items processed since the queue was created.}}
      - {{name: cockpit_oldest_new_item_timestamp_seconds, type: gauge, labels: [queue],
          value: oldest_new, help: Creation time of the oldest item still new; absent when none.}}
  # Fails on purpose, every run: what a broken query looks like on /, in the self-metrics
  # and on the dashboards.
  - name: legacy_orders
    tenants: [initech]
    sql: SELECT COUNT(*) AS n FROM legacy_orders
    metrics:
      - {{name: cockpit_demo_legacy_orders, type: gauge, value: n,
          help: Always fails in the demo (no such table).}}
"""


def demo_config_text(directory: Path, platforms: dict[str, dict[str, object]]) -> str:
    """The demo's YAML configuration: databases in `directory`, APIs from `platforms`."""
    tenants = "\n".join(
        f"  - {{id: {t}, mysql: {{dsn: 'sqlite:///{directory / t}.db'}},"
        f" params: {{tenant_id: {i}}}}}"
        for i, t in enumerate(TENANTS, start=1)
    )
    document = yaml.safe_load(CONFIG.format(tenants=tenants))
    for tenant in document["tenants"]:
        tenant["platform"] = platforms[tenant["id"]] | {"interval": "10s", "timeout": "5s"}
    first = document["tenants"][0]
    first["http_json"] = [_http_json_example(first["platform"])]
    return str(yaml.safe_dump(document, sort_keys=False))


def _http_json_example(platform: dict[str, object]) -> dict[str, object]:
    """The platform's agents read a second way, through the generic http_json source."""
    return {
        "name": "agent_versions",
        "url": f"{platform['base_url']}/api/v1/agents",
        "interval": "10s",
        "timeout": "5s",
        "auth": {
            "oauth2": {
                "token_url": platform["token_url"],
                "client_id": platform["client_id"],
                "client_secret_file": platform["client_secret_file"],
            }
        },
        "pagination": {"cursor": {"param": "page_token", "path": "$.next_page_token"}},
        "metrics": [
            {
                "name": "cockpit_demo_agents_by_version",
                "type": "gauge",
                "help": "Agents per version, read with the http_json source.",
                "items": "$.items[*]",
                "labels": {"version": "$.version"},
            }
        ],
    }


def seed(directory: Path, rng: random.Random) -> None:
    """Create each tenant's database with some work items."""
    for number, tenant in enumerate(TENANTS, start=1):
        with contextlib.closing(sqlite3.connect(directory / f"{tenant}.db")) as db, db:
            db.executescript(_SCHEMA)
            for queue in QUEUES:
                db.execute("INSERT OR IGNORE INTO queue_stats VALUES (?, ?, 0)", (number, queue))
            _add_items(db, number, rng, rng.randint(5, 20), time.time())


def mutate(directory: Path, rng: random.Random, now: float) -> None:
    """Advance each tenant's data: items arrive, progress, finish or fail."""
    for number, tenant in enumerate(TENANTS, start=1):
        with contextlib.closing(sqlite3.connect(directory / f"{tenant}.db")) as db, db:
            _add_items(db, number, rng, rng.randint(0, 4), now)
            for queue in QUEUES:
                done = db.execute(
                    "UPDATE work_items SET status = ? WHERE id IN (SELECT id FROM work_items"
                    " WHERE queue = ? AND status IN ('new', 'in_progress') LIMIT ?)",
                    (rng.choice(STATUSES[1:]), queue, rng.randint(0, 3)),
                ).rowcount
                db.execute(
                    "UPDATE queue_stats SET processed = processed + ? WHERE queue = ?",
                    (done, queue),
                )
            # Old finished items are archived, so some label sets vanish now and then.
            db.execute(
                "DELETE FROM work_items WHERE status IN ('done', 'failed') AND random() % 3 = 0"
            )


def _add_items(
    db: sqlite3.Connection, tenant: int, rng: random.Random, count: int, now: float
) -> None:
    db.executemany(
        "INSERT INTO work_items (tenant_id, queue, status, created_at) VALUES (?, ?, 'new', ?)",
        [(tenant, rng.choice(QUEUES), now) for _ in range(count)],
    )


async def run_demo(settings: Settings, directory: Path | None, simulator_port: int = 0) -> int:
    """Seed demo data, keep changing it, and serve the exporter until interrupted."""
    with tempfile.TemporaryDirectory(prefix="cockpit-demo-") as scratch:
        where = (directory or Path(scratch)).resolve()
        where.mkdir(parents=True, exist_ok=True)
        rng = random.Random(42)
        seed(where, rng)
        simulator = Simulator(list(TENANTS), seed=42)
        try:
            sim_runner, sim_url = await start_simulator(simulator, "127.0.0.1", simulator_port)
        except OSError as exc:
            return fail(str(ListenError(f"127.0.0.1:{simulator_port}", exc)))
        blocks = platform_blocks(simulator, sim_url, where / "secrets")
        config = parse_config(demo_config_text(where, blocks), "demo")
        if "listen_address" not in settings.model_fields_set:
            settings = settings.model_copy(update={"listen_address": "127.0.0.1:9610"})
        settings = settings.model_copy(update={"state_dir": where / "state"})
        exporter = Exporter(config, settings)
        sim_stats = f"{sim_url}/admin/tenants/acme/stats"
        exporter.links = {"platform simulator (acme's stats)": sim_stats}
        try:
            await exporter.start()
        except ListenError as exc:
            await sim_runner.cleanup()
            return fail(str(exc))
        mutator = asyncio.create_task(_keep_mutating(where, rng))
        log.info(
            "demo running",
            url=f"http://127.0.0.1:{exporter.port}/",
            data=str(where),
            platform_simulator=sim_url,
        )
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            mutator.cancel()
            await exporter.stop()
            await sim_runner.cleanup()
    return 0


async def _keep_mutating(directory: Path, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(_MUTATE_EVERY)
        # In a thread: a write waiting for a lock must not stall scrapes and collection.
        await asyncio.to_thread(mutate, directory, rng, time.time())
