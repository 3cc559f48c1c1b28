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


def test_systemd_socket_activation_serves_on_the_passed_socket(tmp_path: Path) -> None:
    """With LISTEN_PID/LISTEN_FDS as systemd sets them and the socket at descriptor 3, the
    exporter serves there; without them it says what is missing and exits."""
    import socket
    import time
    import urllib.request

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    # A launcher moves the socket to descriptor 3, names itself in LISTEN_PID, then becomes
    # the exporter (exec keeps the pid), as systemd arranges it.
    launcher = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3);"
        " os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1');"
        " os.execv(sys.executable, [sys.executable, '-m', 'exporter', '--config.file',"
        " sys.argv[2], '--web.systemd-socket'])"
    )
    fd = listener.fileno()
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, str(fd), str(SQLITE)], cwd=ROOT, pass_fds=(fd,),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listener.close()  # the child has its own copy
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    assert b"cockpit_collection_interval_seconds" in r.read()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "never served on the passed socket"
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=20)
    alone = command("--config.file", str(SQLITE), "--web.systemd-socket")
    assert alone.returncode != 0 and "LISTEN_PID and LISTEN_FDS unset" in alone.stderr
