"""What a process carries: a platform-only exporter never loads the SQL stack (17 MB)."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port

# Runs in a fresh interpreter: this one has imported everything already.
PROBE = """
import asyncio, sys
from pathlib import Path
from exporter.app import Exporter
from exporter.config import load_config
from exporter.settings import Settings

async def main() -> None:
    exporter = Exporter(load_config(Path(sys.argv[1])), Settings(listen_address="127.0.0.1:0"))
    await exporter.start(schedule=False)
    jobs = exporter.runner.jobs()
    await asyncio.gather(*(exporter.run_job(job) for job in jobs))
    await exporter.stop()
    print(len(jobs), {job.kind for job in jobs})

asyncio.run(main())
heavy = {"sqlalchemy", "pymysql", "aiomysql", "aiosqlite", "exporter.sources.sql.source"}
print(sorted(heavy & {*sys.modules, *(m.split(".")[0] for m in sys.modules)}))
"""


def probe(config: Path) -> list[str]:
    """The probe's two lines: jobs and kinds run, then the heavy modules loaded."""
    result = subprocess.run([sys.executable, "-c", PROBE, str(config)], capture_output=True,
                            text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()[-2:]


def test_a_platform_only_exporter_never_imports_the_sql_stack(tmp_path: Path) -> None:
    """Jobs opened and run (against a platform nobody serves), then stopped: no SQLAlchemy,
    no driver, no SQL source. With one SQL tenant, the same probe sees them loaded, so the
    probe can tell."""
    (tmp_path / "secret").write_text("s3cret")
    base = f"http://127.0.0.1:{free_port()}"
    platform = (
        "defaults: {timeout: 2s}\ntenants:\n- id: acme\n  platform:\n"
        f"    base_url: {base}/t/acme\n    token_url: {base}/oauth/token\n"
        f"    client_id: acme\n    client_secret_file: {tmp_path / 'secret'}\n"
    )
    (tmp_path / "platform.yaml").write_text(platform)
    jobs, heavy = probe(tmp_path / "platform.yaml")
    assert jobs.endswith("{'platform'}") and not jobs.startswith("0 "), jobs
    assert heavy == "[]", heavy

    database = tmp_path / "data.sqlite"
    sql = platform + (
        f"- id: globex\n  mysql:\n    dsn: sqlite:///{database}\n"
        "queries:\n- name: one\n  sql: SELECT 1 AS value\n"
        "  metrics:\n  - {name: cockpit_one, type: gauge, help: One., value: value}\n"
    )
    (tmp_path / "both.yaml").write_text(sql)
    jobs, heavy = probe(tmp_path / "both.yaml")
    assert "'sql'" in jobs and "'sqlalchemy'" in heavy and "sql.source'" in heavy, (jobs, heavy)
