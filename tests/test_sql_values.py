"""SQL values and labels as the database means them, and one series per name and label set,
on real MariaDB: the cases where the peers and we disagreed (issue 23, point 1 and 2)."""

import asyncio
import re
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.config import ConfigError, parse_config
from tests.conftest import ScratchDatabase, key

QUERIES = """
queries:
  - name: a_first
    sql: SELECT 'x' AS grp, 1 AS v UNION ALL SELECT 'only_a', 3
    metrics: [{name: df3_shared, type: gauge, help: Shared "quoted" help., labels: [grp], value: v}]
  - name: b_second
    sql: SELECT 'x' AS grp, 2 AS v UNION ALL SELECT 'only_b', 4
    metrics: [{name: df3_shared, type: gauge, help: Shared "quoted" help., labels: [grp], value: v}]
  - name: typed
    sql: >-
      SELECT dt, fl, de, ts, UNIX_TIMESTAMP(ts) AS ts_unix, bit1, da, tm, @@session.time_zone AS tz
      FROM typed
    metrics:
      - {name: df3_datetime_label, type: gauge, help: D., labels: [dt, fl, de, tz], value: bit1}
      - {name: df3_timestamp_seconds, type: gauge, help: T., value: ts}
      - {name: df3_timestamp_unix_seconds, type: gauge, help: T., value: ts_unix}
      - {name: df3_date_seconds, type: gauge, help: D., value: da}
      - {name: df3_time_seconds, type: gauge, help: T., value: tm}
  - name: events
    sql: SELECT grp, n FROM events
    metrics:
      - {name: df3_events_total, type: counter, help: E., labels: [grp], value: n}
      - {name: df3_events_or_none_total, type: counter, help: E., labels: [grp], value: n,
         null_label: none}
"""


@pytest.fixture
async def scraped(database: ScratchDatabase, make_exporter) -> tuple[str, str, object]:
    """One tenant on MariaDB with every case; its text and OpenMetrics scrapes after a run."""
    database.execute(
        "CREATE TABLE typed (dt DATETIME, fl FLOAT, de DECIMAL(20,6), ts TIMESTAMP NULL,"
        " bit1 BIT(1), da DATE, tm TIME(1))",
        # Written by a session two hours east of UTC: the TIMESTAMP is stored as its instant.
        "SET time_zone = '+02:00'",
        "INSERT INTO typed VALUES ('2024-02-29 12:34:56', 16777200, 1.5,"
        " '2024-02-29 16:34:56', b'1', '2024-02-29', '-01:02:03.5')",
        "CREATE TABLE events (grp VARCHAR(10), n INT)",
        "INSERT INTO events VALUES ('pos', 5), ('neg', -5), (NULL, 7), ('', 8)",
    )
    exporter = await make_exporter(
        f"tenants:\n  - {{id: a, mysql: {{dsn: '{database.dsn}'}}}}\n{QUERIES}"
    )
    # The later name runs first and last: the scrape in between already serves "x" once.
    for query in ("b_second", "a_first", "b_second", "typed", "events"):
        await exporter.run("a", query)
    text = await exporter.scrape()
    openmetrics = await exporter.scrape(headers={"Accept": "application/openmetrics-text"})
    return text, openmetrics, exporter


def samples(text: str) -> dict:
    from tests.conftest import parse_samples

    return parse_samples(text)


async def test_two_queries_feeding_one_metric_serve_each_label_set_once(scraped) -> None:
    """Both queries produce grp="x": it is served once, from the query whose name sorts
    first, and counted as a duplicate of the other; their other label sets are both there."""
    text, _, exporter = scraped
    lines = [line for line in text.splitlines() if line.startswith("df3_shared{")]
    assert sorted(lines) == [
        'df3_shared{tenant="a",grp="only_a"} 3',
        'df3_shared{tenant="a",grp="only_b"} 4',
        'df3_shared{tenant="a",grp="x"} 1',
    ]
    assert exporter.stats("a", "sql", "b_second").duplicates == 1
    assert exporter.stats("a", "sql", "a_first").duplicates == 0


def test_queries_feeding_one_metric_must_agree_on_type_help_and_labels() -> None:
    """A different help (or type, or labels) is a config error naming both queries."""
    changed = QUERIES.replace(
        'help: Shared "quoted" help., labels: [grp], value: v}]\n  - name: typed',
        "help: Other., labels: [grp], value: v}]\n  - name: typed",
    )
    with pytest.raises(ConfigError, match=r"queries\[1\]\.metrics\[0\]\.name: metric 'df3_shared'"
                       r" is also defined in queries\[0\] with a different help"):  # fmt: skip
        parse_config(f"tenants: [{{id: a, mysql: {{dsn: 'sqlite:///x.db'}}}}]\n{changed}", "t")


async def test_values_and_labels_read_as_the_database_means_them(scraped) -> None:
    """Labels are the server's text (DATETIME with a space, FLOAT without `.0`, DECIMAL with
    its scale); the session is UTC, so a TIMESTAMP is its instant; BIT(1) is 1, DATE is
    midnight UTC, TIME signed seconds."""
    text, _, _ = scraped
    got = samples(text)
    label = key("df3_datetime_label", tenant="a", dt="2024-02-29 12:34:56", fl="16777200",
                de="1.500000", tz="+00:00")  # fmt: skip
    assert got[label] == 1
    instant = got[key("df3_timestamp_unix_seconds", tenant="a")]
    assert instant == 1709217296  # written as 16:34:56 at +02:00
    assert got[key("df3_timestamp_seconds", tenant="a")] == instant
    assert got[key("df3_date_seconds", tenant="a")] == 1709164800
    assert got[key("df3_time_seconds", tenant="a")] == -3723.5


async def test_null_labels_and_negative_counters(scraped) -> None:
    """A NULL label skips the row and counts it (unless `null_label`), never colliding with a
    real ''; a negative counter sample is dropped and counted, the rest served."""
    text, _, exporter = scraped
    got = samples(text)
    assert got[key("df3_events_total", tenant="a", grp="pos")] == 5
    assert got[key("df3_events_total", tenant="a", grp="")] == 8
    assert key("df3_events_total", tenant="a", grp="neg") not in got
    assert got[key("df3_events_or_none_total", tenant="a", grp="none")] == 7
    stats = exporter.stats("a", "sql", "events")
    assert stats.nulls == 1 and stats.invalid == 2  # one NULL row; -5 in each metric
    dropped = key("cockpit_collection_samples_dropped_total", tenant="a", source="sql",
                  query="events", reason="invalid_value")  # fmt: skip
    assert got[dropped] == 2


async def test_both_parsers_accept_every_scrape(scraped) -> None:
    """promtool and prometheus_client's OpenMetrics parser accept the output; HELP with `"`
    is escaped in OpenMetrics."""
    text, openmetrics, _ = scraped
    assert '# HELP df3_shared Shared \\"quoted\\" help.' in openmetrics
    families = {f.name for f in text_string_to_metric_families(openmetrics)}
    assert {"df3_shared", "df3_events"} <= families
    promtool = shutil.which("promtool")
    assert promtool, "`make test` installs Debian's prometheus"
    result = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True,
        text=True, check=False, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


FEATURES = """
queries:
  - name: durations
    sql: SELECT queue, seconds FROM jobs
    metrics:
      - {name: df3_job_seconds, type: histogram, help: H., labels: [queue], value: seconds,
         buckets: [1, 5, 10]}
      - {name: df3_job_seconds_summary, type: summary, help: S., labels: [queue], value: seconds}
  - name: states
    sql: SELECT host, state FROM hosts
    metrics:
      - {name: df3_host_state, type: enum, help: E., labels: [host], value: state,
         states: [up, down, maintenance]}
  - name: events
    sql: SELECT queue, COUNT(*) AS n FROM jobs GROUP BY queue
    metrics:
      - {name: df3_jobs_seen_total, type: counter, help: C., labels: [queue], value: n,
         increment: true}
  - name: per_queue
    sql: SELECT :queue AS queue, COUNT(*) AS n, SUM(seconds) AS s FROM jobs WHERE queue = :queue
    parameters: [{queue: a}, {queue: b}]
    min_rows: 2
    metrics:
      - {name: df3_queue, type: gauge, help: Q., labels: [queue], values: [n, s],
         value_label: column}
  - name: needs_three
    sql: SELECT 1 AS v
    min_rows: 3
    metrics: [{name: df3_three, type: gauge, help: T., value: v}]
"""


async def test_histograms_enums_increments_parameters_and_value_columns(
    database: ScratchDatabase, make_exporter, tmp_path
) -> None:
    """Each peer feature end to end on MariaDB; histogram, summary and increment totals go on
    across a restart with the same state directory."""
    database.execute(
        "CREATE TABLE jobs (queue VARCHAR(5), seconds DOUBLE)",
        "INSERT INTO jobs VALUES ('a', 0.5), ('a', 7), ('b', 20)",
        "CREATE TABLE hosts (host VARCHAR(5), state VARCHAR(20))",
        "INSERT INTO hosts VALUES ('h1', 'up'), ('h2', 'maintenance')",
    )
    text = f"tenants:\n  - {{id: a, mysql: {{dsn: '{database.dsn}'}}}}\n{FEATURES}"
    state = tmp_path / "state"
    first = await make_exporter(text, state_dir=state)
    for query in ("durations", "states", "events", "per_queue", "needs_three"):
        await first.run("a", query)
    got = samples(await first.scrape())
    bucket = {le: got[key("df3_job_seconds_bucket", tenant="a", queue="a", le=le)]
              for le in ("1.0", "5.0", "10.0", "+Inf")}  # fmt: skip
    assert bucket == {"1.0": 1, "5.0": 1, "10.0": 2, "+Inf": 2}
    assert got[key("df3_job_seconds_sum", tenant="a", queue="a")] == 7.5
    assert got[key("df3_job_seconds_summary_count", tenant="a", queue="b")] == 1
    states = {s: got[key("df3_host_state", tenant="a", host="h2", df3_host_state=s)]
              for s in ("up", "down", "maintenance")}  # fmt: skip
    assert states == {"up": 0, "down": 0, "maintenance": 1}
    assert got[key("df3_jobs_seen_total", tenant="a", queue="a")] == 2
    assert got[key("df3_queue", tenant="a", queue="b", column="s")] == 20
    assert got[key("df3_queue", tenant="a", queue="a", column="n")] == 2
    assert first.stats("a", "sql", "needs_three").errors["too_few_rows"] == 1
    openmetrics = await first.scrape(headers={"Accept": "application/openmetrics-text"})
    kinds = {f.name: f.type for f in text_string_to_metric_families(openmetrics)}
    assert kinds["df3_host_state"] == "stateset" and kinds["df3_job_seconds"] == "histogram"
    await first.exporter.stop()

    second = await make_exporter(text, state_dir=state)
    for query in ("durations", "events"):
        await second.run("a", query)
    again = samples(await second.scrape())
    assert again[key("df3_job_seconds_count", tenant="a", queue="a")] == 4  # 2 + 2
    assert again[key("df3_job_seconds_summary_sum", tenant="a", queue="b")] == 40
    assert again[key("df3_jobs_seen_total", tenant="a", queue="a")] == 4


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ("{name: m, type: histogram, help: H., value: v}", "buckets is needed by type histogram"),
        ("{name: m, type: enum, help: H., value: v}", "states is needed by type enum"),
        ("{name: m, type: gauge, help: H., value: v, buckets: [1]}", "and only by it"),
        ("{name: m_total, type: counter, help: H., value: v, values: [v]}", "exactly one of"),
        ("{name: m, type: gauge, help: H., values: [v]}", "values and value_label go together"),
        ("{name: m, type: gauge, help: H., value: v, increment: true}", "increment is for"),
        ("{name: m, type: histogram, help: H., value: v, buckets: [5, 1]}", "strictly increasing"),
        ("{name: m_count, type: summary, help: H., value: v}", "must not end in _bucket"),
    ],
)
def test_peer_features_are_checked_where_they_are_written(metric: str, message: str) -> None:
    """Each wrong combination names the key and what is wrong."""
    text = (
        "tenants: [{id: a, mysql: {dsn: 'sqlite:///x.db'}}]\n"
        f"queries:\n  - {{name: q, sql: SELECT 1 AS v, metrics: [{metric}]}}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, "t")


async def test_tenant_labels_and_a_cron_schedule(database: ScratchDatabase, make_exporter) -> None:
    """A tenant's own labels follow `tenant` on its query series; a cron query's interval
    gauge is its longest gap, so staleness alerts wait for the next firing."""
    database.execute("CREATE TABLE t (v INT)", "INSERT INTO t VALUES (7)")
    exporter = await make_exporter(
        f"tenants:\n  - {{id: a, mysql: {{dsn: '{database.dsn}'}}, labels: {{region: eu}}}}\n"
        "queries:\n  - {name: nightly, sql: SELECT v FROM t, schedule: '0 3 * * *', metrics: "
        "[{name: df3_v, type: gauge, help: V., value: v}]}\n"
    )
    await exporter.run("a", "nightly")
    text = await exporter.scrape()
    assert 'df3_v{tenant="a",region="eu"} 7' in text.splitlines()
    interval = key("cockpit_collection_interval_seconds", tenant="a", source="sql",
                   query="nightly")  # fmt: skip
    assert samples(text)[interval] == 86400


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("schedule: '0 3 * * *', interval: 1m", "set interval or schedule, not both"),
        ("schedule: 'every day'", "not a crontab expression"),
    ],
)
def test_a_schedule_is_checked_where_it_is_written(extra: str, message: str) -> None:
    """A schedule with an interval, or one that is not crontab, names the query."""
    text = (
        "tenants: [{id: a, mysql: {dsn: 'sqlite:///x.db'}}]\n"
        f"queries:\n  - {{name: q, sql: SELECT 1 AS v, {extra}, metrics: "
        "[{name: m, type: gauge, help: M., value: v}]}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, "t")


def test_a_tenant_label_that_a_query_already_has_is_refused() -> None:
    """A tenant label named like a label of its queries' series would duplicate it."""
    text = (
        "tenants: [{id: a, mysql: {dsn: 'sqlite:///x.db'}, labels: {queue: eu}}]\n"
        "queries:\n  - {name: q, sql: \"SELECT 'x' AS queue, 1 AS v\", metrics: "
        "[{name: m, type: gauge, help: M., labels: [queue], value: v}]}\n"
    )
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.labels\.queue: queries\[0\] \(q\)"):
        parse_config(text, "t")
