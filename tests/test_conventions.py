"""What a Prometheus user expects of the command: flags, version block, logfmt, exporter metrics."""

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from exporter import logs

ROOT = Path(__file__).resolve().parent.parent
SQLITE = ROOT / "examples" / "sqlite.yaml"


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True,
                          text=True, check=False, timeout=60, cwd=ROOT)  # fmt: skip


@pytest.mark.parametrize("how", [["--version"], ["version"]])
def test_the_version_block_reads_like_prometheus(how: list[str]) -> None:
    """`--version` and `version`: the Prometheus-style block, one fact per line."""
    result = command(*how)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"cockpit-exporter, version \S+ \(revision: ([0-9a-f]{12}|unknown)\)", lines[0]
    )
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "build date", "python version", "platform"
    ]  # fmt: skip


def test_top_level_help_shows_runs_flags_and_config_file_has_its_prometheus_name() -> None:
    """`--help` is run's help (the default command); `--config.file` and `--config` both work,
    for `run` and `check-config` alike."""
    text = command("--help").stdout
    assert "--web.listen-address" in text and "--config.file" in text and "check-config" in text
    assert "COCKPIT_SHUTDOWN_GRACE_PERIOD" in text and "COCKPIT_STATE_RETENTION" in text
    for flag in ("--config", "--config.file"):
        result = command("check-config", flag, str(SQLITE))
        assert result.returncode == 0, result.stdout + result.stderr
    both = command("check-config", str(SQLITE), "--config", str(SQLITE))
    assert both.returncode != 0 and "once" in both.stderr


def test_logfmt_lines_begin_with_ts_level_caller_msg(monkeypatch: pytest.MonkeyPatch) -> None:
    """As go-kit and slog write them; the event's keys follow, credentials still redacted."""
    written = io.StringIO()
    monkeypatch.setattr(sys, "stderr", written)
    logs.configure("info", "logfmt")
    try:
        structlog.get_logger("t").warning("state not saved", job="a/sql/q", password="hunter2")
    finally:
        monkeypatch.undo()  # the logger writes where stderr was at configure time
        logs.configure("info", "console")
    line = written.getvalue().strip().splitlines()[-1]
    assert re.match(
        r'ts=\S+Z level=warning caller=test_conventions\.py:\d+ msg="state not saved" job=a/sql/q ',
        line,
    ), line
    assert "hunter2" not in line


async def test_disable_exporter_metrics_keeps_collection_health(make_exporter) -> None:
    """`--web.disable-exporter-metrics`: no process_*, python_* or HTTP connection series;
    the collection self-metrics stay."""
    text = SQLITE.read_text()  # jobs are not run: no database file is made
    plain = await make_exporter(text)
    assert "process_cpu_seconds_total" in await plain.scrape()
    bare = await make_exporter(text, disable_exporter_metrics=True)
    scraped = await bare.scrape()
    assert not re.search(r"^(process_|python_|cockpit_exporter_http_connections)", scraped, re.M)
    assert "cockpit_collection_interval_seconds{" in scraped


def test_render_rules_uses_the_configured_runbook_base_url(tmp_path: Path) -> None:
    """`alerting.runbook_base_url` is where every alert's runbook_url points."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "alerting:\n  operators: [{webhook: {url: 'http://127.0.0.1:9/ops'}}]\n"
        "  runbook_base_url: https://wiki.example.com/cockpit/runbooks\n"
        "tenants: [{id: a}]\n"
    )
    result = command("render", "rules", "--config", str(config))
    assert result.returncode == 0, result.stderr
    urls = set(re.findall(r"runbook_url: (\S+)#", result.stdout))
    assert urls == {"https://wiki.example.com/cockpit/runbooks"}
