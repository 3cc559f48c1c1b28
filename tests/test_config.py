"""Configuration: every problem reported with its location, secrets resolved, never echoed."""

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, load_config, parse_config
from exporter.durations import parse_duration

VALID = """
defaults: {interval: 30s, timeout: 10s}
tenants:
  - id: acme
    mysql: {dsn: "mysql://cockpit@db:3306/acme"}
    params: {tenant_id: 17}
  - id: globex
    mysql: {dsn: "sqlite:///tmp/globex.db"}
    params: {tenant_id: 18}
  - id: nodb
queries:
  - name: work_items
    sql: SELECT queue, COUNT(*) AS items FROM work_items WHERE tenant_id = :tenant_id GROUP BY queue
    interval: 15s
    timeout: 5s
    metrics:
      - {name: cockpit_work_items, type: gauge, help: Items., labels: [queue], value: items}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "test.yaml")
    return caught.value.problems


def test_valid_config_expands_to_one_job_per_tenant_with_a_database() -> None:
    """Tenants without a database get no SQL jobs; query values override defaults."""
    config = parse_config(VALID, "x")
    assert [job.key for job in config.jobs] == [("acme", "work_items"), ("globex", "work_items")]
    assert config.jobs[0].query.interval == 15.0
    assert config.jobs[0].query.timeout == 5.0
    assert config.jobs[0].database.url.drivername == "mysql+aiomysql"
    assert config.jobs[1].database.url.drivername == "sqlite+aiosqlite"
    assert config.tenants == ("acme", "globex", "nodb")


TENANT = '  - id: t1\n    mysql: {dsn: "mysql://u@h/db"}\n'
METRIC = "{name: cockpit_x, type: gauge, help: X., value: v}"


def config_with(tenants: str = TENANT, queries: str = "", top: str = "") -> str:
    query_block = queries or f"  - name: q\n    sql: SELECT 1 AS v\n    metrics: [{METRIC}]\n"
    return f"{top}tenants:\n{tenants}queries:\n{query_block}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("tenants: [", "line 1, column 11: invalid YAML", id="yaml-syntax"),
        pytest.param("- a\n- b\n", "the file must be a mapping", id="not-a-mapping"),
        pytest.param(
            "queries: []\n",
            "tenants: list at least one tenant, or add tenant_discovery",
            id="no-tenants",
        ),
        pytest.param(
            "defaults: {pool_size: 2}\ntenants: [{id: a}]\n",
            "defaults: pool_size was per database; connections are now shared per server",
            id="renamed-pool-size",
        ),
        pytest.param(config_with(top="bogus: 1\n"), "bogus: unknown key", id="unknown-top-key"),
        pytest.param(
            config_with(tenants='  - id: Acme!\n    mysql: {dsn: "mysql://u@h/db"}\n'),
            "tenants[0].id: invalid tenant id 'Acme!'",
            id="bad-tenant-id",
        ),
        pytest.param(
            config_with(tenants='  - id: t1\n    mysql: {dsn: "postgres://u@h/db"}\n'),
            "tenants[0].mysql.dsn: must start with mysql://, mariadb:// or sqlite://",
            id="dsn-scheme",
        ),
        pytest.param(
            config_with(tenants='  - id: t1\n    mysql: {dsn: "mysql://u@h/db", pasword: x}\n'),
            "tenants[0].mysql.pasword: unknown key",
            id="unknown-nested-key",
        ),
        pytest.param(
            config_with(tenants=TENANT + TENANT),
            "tenants[1].id: duplicate tenant id 't1' (first at tenants[0])",
            id="duplicate-tenant",
        ),
        pytest.param(
            config_with(top="defaults: {interval: soon}\n"),
            "defaults.interval: invalid duration 'soon'",
            id="bad-duration",
        ),
        pytest.param(
            config_with(
                queries=f"  - name: q\n    sql: SELECT 1 AS v\n    interval: 5s\n    timeout: 10s\n"
                f"    metrics: [{METRIC}]\n"
            ),
            "queries[0].timeout: timeout (10s) is longer than the interval",
            id="timeout-over-interval",
        ),
        pytest.param(
            config_with(
                queries=f"  - name: q\n    sql: SELECT :tenant_id AS v\n    metrics: [{METRIC}]\n"
            ),
            "queries[0].sql: parameter :tenant_id is not set for tenant 't1'; add it to "
            "tenants[0].params",
            id="missing-param",
        ),
        pytest.param(
            config_with(
                queries=f"  - name: q\n    sql: SELECT 1 AS v\n    tenants: [zz]\n"
                f"    metrics: [{METRIC}]\n"
            ),
            "queries[0].tenants[0]: unknown tenant 'zz'",
            id="unknown-query-tenant",
        ),
        pytest.param(
            config_with(
                queries="  - name: q\n    sql: SELECT 1 AS v\n    metrics:\n"
                "      - {name: cockpit_x, type: counter, help: X., value: v}\n"
            ),
            "queries[0].metrics[0]: counter 'cockpit_x' must end in _total",
            id="counter-suffix",
        ),
        pytest.param(
            config_with(
                queries="  - name: q\n    sql: SELECT 1 AS v\n    metrics:\n"
                "      - {name: cockpit_x, type: gauge, help: X., value: v, labels: [tenant]}\n"
            ),
            "queries[0].metrics[0].labels[0]: label name 'tenant' is reserved",
            id="reserved-label",
        ),
        pytest.param(
            config_with(
                queries="  - name: q\n    sql: SELECT 1 AS v\n    metrics:\n"
                "      - {name: cockpit_x, type: gauge, help: X., value: v, labels: [__a]}\n"
            ),
            "queries[0].metrics[0].labels[0]: label name '__a' is reserved",
            id="dunder-label",
        ),
        pytest.param(
            config_with(
                queries="  - name: q\n    sql: SELECT 1 AS v\n    metrics:\n"
                "      - {name: cockpit_collection_success, type: gauge, help: X., value: v}\n"
            ),
            "uses a reserved prefix",
            id="reserved-metric-prefix",
        ),
        pytest.param(
            config_with(
                queries=f"  - name: a\n    sql: SELECT 1 AS v\n    metrics: [{METRIC}]\n"
                "  - name: b\n    sql: SELECT 1 AS v\n    metrics:\n"
                "      - {name: cockpit_x, type: gauge, help: X., value: v, labels: [k]}\n"
            ),
            "queries[1].metrics[0].name: metric 'cockpit_x' is also defined in queries[0]",
            id="metric-label-clash",
        ),
        pytest.param(
            config_with(
                tenants='  - id: t1\n    mysql: {dsn: "mysql://u@h/db", password_file: /no/such}\n'
            ),
            "tenants[0].mysql.password_file: cannot read /no/such: No such file or directory",
            id="unreadable-secret",
        ),
        pytest.param(
            config_with(
                tenants='  - id: t1\n    mysql: {dsn: "mysql://u@h/db", password_env: NOPE_X1}\n'
            ),
            "tenants[0].mysql.password_env: variable NOPE_X1 is not set",
            id="unset-secret-env",
        ),
    ],
)
def test_invalid_config_names_the_location(text: str, expected: str) -> None:
    """Each kind of mistake is reported with where it is and what to do."""
    found = problems(text)
    assert any(expected in problem for problem in found), found


def test_every_problem_is_listed_at_once() -> None:
    """Several independent mistakes are all reported in one go."""
    text = config_with(
        tenants='  - id: BAD\n    mysql: {dsn: "x://"}\n    extra: 1\n',
        top="defaults: {timeout: 0}\n",
    )
    found = problems(text)
    assert len(found) == 4, found


def test_secret_file_is_read_and_never_shown(tmp_path: Path) -> None:
    """The password comes from the file; the DSN shown in logs masks it."""
    secret = tmp_path / "pw"
    secret.write_text("hunter2-very-secret\n")
    config = parse_config(
        config_with(
            tenants=f'  - id: t1\n    mysql: {{dsn: "mysql://u@h/db", password_file: {secret}}}\n'
        ),
        "x",
    )
    spec = config.jobs[0].database
    assert spec.url.password == "hunter2-very-secret"
    assert "hunter2" not in spec.display
    assert "hunter2" not in repr(config)


def test_inline_password_is_accepted_with_a_warning_that_hides_it() -> None:
    """An inline DSN password works but is flagged; the warning does not repeat it."""
    config = parse_config(
        config_with(tenants='  - id: t1\n    mysql: {dsn: "mysql://u:pa55@h/db"}\n'), "x"
    )
    assert config.warnings and "inline password" in config.warnings[0]
    assert all("pa55" not in w for w in config.warnings)


def test_unparseable_dsn_error_does_not_echo_it() -> None:
    """A DSN the parser rejects is reported without its text (it may hold a password)."""
    found = problems(
        config_with(tenants='  - id: t1\n    mysql: {dsn: "mysql://u:s3cret@h:port/db"}\n')
    )
    assert any("tenants[0].mysql.dsn: cannot parse the DSN" in p for p in found), found
    assert all("s3cret" not in p for p in found)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist is an error, not an empty exporter."""
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0), (15, 15.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    """Prometheus-style durations and bare seconds are understood."""
    assert parse_duration(text) == seconds


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    """check-config exits 0 on a valid file and 2 with the listed problems otherwise."""
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    ok = run_cli("check-config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "2 job(s)" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("id: globex", "id: Globex"))
    failed = run_cli("check-config", str(bad))
    assert failed.returncode == 2
    assert "tenants[1].id: invalid tenant id 'Globex'" in failed.stderr


def test_run_refuses_invalid_or_missing_config(tmp_path: Path) -> None:
    """The exporter does not start on a bad config, and says why, with exit code 2."""
    missing = run_cli("--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert "file not found" in missing.stderr
    nothing = run_cli()
    assert nothing.returncode == 2
    assert "pass --config FILE or set COCKPIT_CONFIG" in nothing.stderr


EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every documented example passes validation."""
    monkeypatch.setenv("ACME_DB_PASSWORD", "example")
    monkeypatch.chdir(path.parent)
    load_config(path)


def test_check_config_counts_every_source_kind(tmp_path: Path) -> None:
    """A config without SQL still has jobs: platform polls and http_json endpoints count."""
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    text = f"""
tenants:
  - id: acme
    platform: {{base_url: http://127.0.0.1:9, token_url: http://127.0.0.1:9/t,
               client_id: c, client_secret_file: {secret}}}
    http_json:
      - {{name: a, url: http://127.0.0.1:9/a, metrics: [{{name: x_a, type: gauge, help: A.}}]}}
      - {{name: b, url: http://127.0.0.1:9/b, metrics: [{{name: x_b, type: gauge, help: B.}}]}}
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    result = run_cli("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "1 tenant(s), 3 job(s)" in result.stdout
