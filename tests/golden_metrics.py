"""Golden /metrics of the SQL and platform sources for fixed data.

`python -m tests.golden_metrics FILE` writes it; tests/test_golden.py compares the current
code's output with the committed tests/golden/metrics.prom, which was written by the code
before the sources moved behind one interface, so the refactor is proven byte-identical.
Values that depend on the wall clock or on speed (durations, timestamps of our own) are
replaced by `X`; everything else, names, labels, order and values, is compared as it is.
"""

import asyncio
import re
import sqlite3
import sys
import tempfile
from pathlib import Path

from exporter.app import Exporter
from exporter.config import parse_config
from exporter.settings import Settings
from tests.platform_helpers import ManualClock, start

PLATFORM_START = 1_800_000_000.0
_VARYING = re.compile(
    r"^((?:cockpit_collection_duration_seconds|cockpit_collection_last_success_timestamp_seconds"
    r"|cockpit_collection_last_duration_seconds|cockpit_collection_seconds_total"
    r"|cockpit_collection_failing_since_timestamp_seconds"
    r"|cockpit_platform_request_duration_seconds_(?:sum|bucket)|cockpit_exporter_config\w*"
    r"|cockpit_exporter_build_info|cockpit_platform_runs_lag_seconds)\S*) .*$",
    re.MULTILINE,
)


def _database(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (tenant_id INT, queue TEXT, status TEXT, weight REAL)")
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(1, "billing", "new", 1.5), (1, "billing", "new", 2.25), (1, "ops", "done", 4),
             (2, "billing", "new", 7), (2, 'q"uote', "new", 1)],
        )  # fmt: skip
    return f"sqlite:///{path}"


def _config(directory: Path, platform_yaml: str) -> str:
    dsn = _database(directory / "data.db")
    tenants = platform_yaml.replace("tenants:\n", "")
    for number in (1, 2):
        sql = f"\n  mysql: {{dsn: '{dsn}'}}\n  params: {{t: {number}}}"
        tenants = tenants.replace(f"- id: t000{number}", f"- id: t000{number}{sql}")
    return f"""
tenants:
{tenants}
queries:
  - name: items
    sql: SELECT queue, status, COUNT(*) AS n, SUM(weight) AS w FROM items
         WHERE tenant_id = :t GROUP BY queue, status ORDER BY queue, status
    metrics:
      - {{name: cockpit_items, type: gauge, help: Items., labels: [queue, status], value: n}}
      - {{name: cockpit_item_weight, type: gauge, help: Weight., labels: [queue, status], value: w}}
  - name: broken
    sql: SELECT nope FROM items
    metrics: [{{name: cockpit_broken, type: gauge, help: Broken., value: nope}}]
"""


async def render() -> str:
    """Run every job once over fixed data and return the normalised exposition."""
    simulator = await start(2, seed=11, clock=ManualClock(PLATFORM_START))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = parse_config(_config(directory, simulator.config(directory)), "golden")
        exporter = Exporter(config, Settings(listen_address="127.0.0.1:0", state_dir=None))
        await exporter.start(schedule=False)
        try:
            if hasattr(exporter, "poll_platform"):  # the code before the Sources interface
                for query_job in config.jobs:
                    await exporter.run_job(query_job)
                for spec in config.platforms:
                    await exporter.poll_platform(spec)
            else:
                for job in exporter.runner.jobs():
                    await exporter.run_job(job)
            text = exporter.store.render(openmetrics=False).decode()
        finally:
            await exporter.stop()
            await simulator.runner.cleanup()
    # The build's labels (version, git revision, runtime) vary with the checkout: masked too.
    text = re.sub(r"^cockpit_exporter_build_info\{.*$", "cockpit_exporter_build_info{...} X",
                  text, flags=re.MULTILINE)  # fmt: skip
    return _VARYING.sub(r"\1 X", text)


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(asyncio.run(render()), encoding="utf-8")
