"""Exact bytes of the exposition helpers and the snapshot store, in-process."""

import time

import pytest

from exporter.exposition import Family, escape_label_value, format_value, label_block
from exporter.sources.platform.models import Process
from exporter.sources.platform.render import render_processes
from exporter.store import Snapshot, SnapshotStore

GAUGE = Family("cockpit_x", "gauge", "X.")
COUNTER = Family("cockpit_y_total", "counter", "Y.")


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("plain", "plain"),
        ('a"b\\c\nd', 'a\\"b\\\\c\\nd'),
        ("caf\u00e9", "caf\u00e9"),
        ("bad\ud800name", "bad\ufffdname"),  # a lone surrogate has no UTF-8 form
        ("\udcff", "\ufffd"),
    ],
)
def test_escape_label_value(raw: str, escaped: str) -> None:
    """Quotes, backslashes and newlines escaped; lone surrogates replaced, so encoding works."""
    assert escape_label_value(raw) == escaped
    escape_label_value(raw).encode("utf-8")


def test_a_process_name_with_a_lone_surrogate_renders() -> None:
    """The platform's process names come from JSON, where "\\ud800" is legal: it renders as
    U+FFFD instead of failing the encoding of the whole snapshot."""
    lines = render_processes("acme", [Process(id="p1", name="x\ud800", enabled=True)])
    body = lines.bodies()["cockpit_process_enabled"]
    assert body == b'cockpit_process_enabled{tenant="acme",process_id="p1"} 1\n'
    info = lines.bodies()["cockpit_process_info"]
    assert info == 'cockpit_process_info{tenant="acme",process_id="p1",name="x\ufffd"} 1\n'.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (2.0, "2"), (0.25, "0.25"), (float("nan"), "NaN"), (float("-inf"), "-Inf")],
)
def test_format_value(value: float, text: str) -> None:
    """Integral values print short; NaN and infinities in the spelling both parsers accept."""
    assert format_value(value) == text


def test_store_renders_exact_bytes_and_groups() -> None:
    """Families sorted, headers once, tenants filtered, operators-only series hidden from
    filtered scrapes, OpenMetrics counter names without _total (the HTTP layer adds EOF)."""
    store = SnapshotStore()
    store.register([GAUGE, COUNTER])
    store.put(("a", "s", "q"), Snapshot("a", {GAUGE.name: b'cockpit_x{tenant="a"} 1\n'}))
    store.put(("b", "s", "q"), Snapshot("b", {GAUGE.name: b'cockpit_x{tenant="b"} 2\n'}))
    store.put(("", "e", "c"), Snapshot(None, {COUNTER.name: b"cockpit_y_total 5\n"}, True))
    assert store.render(openmetrics=False) == (
        b"# HELP cockpit_x X.\n# TYPE cockpit_x gauge\n"
        b'cockpit_x{tenant="a"} 1\ncockpit_x{tenant="b"} 2\n'
        b"# HELP cockpit_y_total Y.\n# TYPE cockpit_y_total counter\ncockpit_y_total 5\n"
    )
    assert store.render(openmetrics=False, tenants=frozenset({"b"})) == (
        b'# HELP cockpit_x X.\n# TYPE cockpit_x gauge\ncockpit_x{tenant="b"} 2\n'
    )
    assert store.render(openmetrics=True).endswith(
        b"# TYPE cockpit_y counter\n# HELP cockpit_y Y.\ncockpit_y_total 5\n"
    )
    store.remove(("a", "s", "q"))
    assert b'tenant="a"' not in store.render(openmetrics=False)


def test_gauges_expire_without_a_scrape_and_their_deadlines_do_not_pile_up() -> None:
    """Every successful run puts gauges with a deadline. Nobody scrapes for 5,000 runs: the
    deadlines that are due go at each put, so they do not pile up, and a gauge whose time
    is up is gone even though no render happened in between."""
    store = SnapshotStore()
    store.register([GAUGE, COUNTER])
    key = ("a", "sql", "q")
    without = Snapshot("a", {COUNTER.name: b'cockpit_y_total{tenant="a"} 1\n'})
    whole = Snapshot("a", {**without.bodies, GAUGE.name: b'cockpit_x{tenant="a"} 1\n'})
    for _ in range(5000):
        store.put(key, whole, time.time(), without)  # due at once: stale_after of zero
    assert len(store._deadlines) <= 1  # private: the heap is what grew without bound
    other = Snapshot("b", {GAUGE.name: b'cockpit_x{tenant="b"} 2\n'})
    store.put(("b", "sql", "q"), other, time.time() + 3600, other)  # a put expires the rest
    assert store._snapshots[key] is without
    assert b'cockpit_x{tenant="a"}' not in store.render(openmetrics=False)


def test_one_owner_per_family_name() -> None:
    """A second owner of a family name is refused (it would duplicate series); the same owner
    may register again (a reload)."""
    store = SnapshotStore()
    store.register([GAUGE], "sql")
    store.register([Family("cockpit_x", "gauge", "X, reworded.")], "sql")
    with pytest.raises(ValueError, match="'cockpit_x' is exported by both sql and platform"):
        store.register([GAUGE], "platform")


def test_label_block() -> None:
    """Pairs in order, values as given (already escaped)."""
    assert label_block([("tenant", "a"), ("q", 'x\\"')]) == '{tenant="a",q="x\\""}'


def test_sql_series_exact_lines() -> None:
    """Tenant first, labels in configured order, NULL values skipped and counted, a repeated
    label set counted once as a duplicate, decimals kept exact, the limit counted."""
    from decimal import Decimal

    from exporter.config import MetricSpec
    from exporter.sources.sql.series import build_series

    metric = MetricSpec("cockpit_w", "gauge", "W.", ("queue", "status"), "w")
    rows = [
        ("b", "new", Decimal("2.25")),
        ("a", "done", None),
        ("b", "new", Decimal("1")),
        ("c", 'x"y', 3),
    ]
    result = build_series(["queue", "status", "w"], rows, [metric], "acme", max_series=10)
    assert result.lines == {
        "cockpit_w": [
            'cockpit_w{tenant="acme",queue="b",status="new"} 2.25\n',
            'cockpit_w{tenant="acme",queue="c",status="x\\"y"} 3\n',
        ]
    }
    assert (result.series, result.nulls, result.duplicates, result.dropped) == (2, 1, 1, 0)
    limited = build_series(["queue", "status", "w"], rows, [metric], "acme", max_series=1)
    assert (limited.series, limited.dropped) == (1, 1)


def test_self_metrics_basic_budget() -> None:
    """Before a run only what is known: no success, no last success (never a 0 that reads as
    1970); counters from zero, so increase() sees the first error; then the outcome."""
    from exporter.selfmetrics import JobStats

    stats = JobStats("acme", "sql", "q", reasons=("timeout", "query"), interval=120)

    def lines() -> list[str]:
        return [line for body in stats.render().values() for line in body.decode().splitlines()]

    def names() -> list[str]:
        return sorted({line.split("{")[0] for line in lines()})

    counters = [
        "cockpit_collection_duplicate_series_total",
        "cockpit_collection_errors_total",
        "cockpit_collection_interval_seconds",
        "cockpit_collection_null_values_total",
        "cockpit_collection_runs_total",
        "cockpit_collection_samples_dropped_total",
        "cockpit_collection_seconds_total",
        "cockpit_collection_series_dropped_total",
    ]
    assert names() == counters
    labels = 'tenant="acme",source="sql",query="q"'
    assert f'cockpit_collection_errors_total{{{labels},reason="timeout"}} 0' in lines()
    stats.record_success(0.1, 3)
    success = [
        "cockpit_collection_last_duration_seconds",
        "cockpit_collection_last_success_timestamp_seconds",
        "cockpit_collection_success",
    ]
    assert names() == sorted(counters + success)
    assert f"cockpit_collection_interval_seconds{{{labels}}} 120" in lines()
    stats.record_failure(0.5, "timeout", "slow")
    stats.record_failure(0.25, "query", "bad")
    assert names() == sorted(
        [*counters, *success, "cockpit_collection_failing_since_timestamp_seconds"]
    )
    assert f'cockpit_collection_errors_total{{{labels},reason="timeout"}} 1' in lines()
    assert f"cockpit_collection_seconds_total{{{labels}}} 0.85" in lines()
    assert f"cockpit_collection_success{{{labels}}} 0" in lines()
    assert stats.failing_since is not None and stats.last_success is not None
    assert stats.failing_since >= stats.last_success
    first = stats.failing_since
    stats.record_failure(0.1, "query", "bad")
    assert stats.failing_since == first  # since the first failure, not the latest
    stats.record_success(0.1, 3)
    assert stats.failing_since is None
    platform = JobStats("acme", "platform", "runs", reasons=("http",), problems=False)
    assert not [n for n in platform.render() if "null" in n or "duplicate" in n or "dropped" in n]
    assert f'cockpit_collection_samples_dropped_total{{{labels},reason="invalid_value"}} 0' in (
        lines()
    )


def test_self_metrics_exact_lines() -> None:
    """The full set: each job's self-metrics, labelled tenant, source, query; every reason
    from 0."""
    from exporter.selfmetrics import JobStats

    stats = JobStats("acme", "sql", "q", reasons=("timeout", "query"), full=True)
    stats.record_failure(0.5, "timeout", "slow")
    bodies = stats.render()
    labels = 'tenant="acme",source="sql",query="q"'
    assert (
        bodies["cockpit_collection_series"] == f"cockpit_collection_series{{{labels}}} 0\n".encode()
    )
    assert (
        bodies["cockpit_collection_success"]
        == f"cockpit_collection_success{{{labels}}} 0\n".encode()
    )
    assert (
        bodies["cockpit_collection_runs_total"]
        == f"cockpit_collection_runs_total{{{labels}}} 1\n".encode()
    )
    assert (
        bodies["cockpit_collection_errors_total"]
        == (
            f'cockpit_collection_errors_total{{{labels},reason="query"}} 0\n'
            f'cockpit_collection_errors_total{{{labels},reason="timeout"}} 1\n'
        ).encode()
    )
    assert stats.last_error == "slow" and stats.series == 0


def test_gzip_prefix_continues_to_one_valid_member() -> None:
    """A compressed body continued by different tails decompresses to body + tail each time,
    as a single gzip member (what every HTTP client reads)."""
    import gzip
    import zlib

    from exporter.gzipped import GzipPrefix

    body = b"".join(b'cockpit_x{tenant="t%d"} %d\n' % (i, i) for i in range(5000))
    prefix = GzipPrefix([body[:1000], b"", body[1000:]])
    for tail in (b"", b"process_cpu_seconds_total 1.5\n", b"x" * 100_000):
        data = prefix.with_tail(tail)
        assert gzip.decompress(data) == body + tail
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert member.decompress(data) == body + tail and member.unused_data == b""
    assert len(prefix.compressed) < len(body) / 5


def test_store_render_matches_a_plain_join_through_random_puts_and_removes() -> None:
    """The per-tenant pieces kept joined between scrapes never go stale: after every change
    the output equals sorting and joining everything from scratch. Half the families a put
    keeps are the very bytes objects of the key's last snapshot (as a reused reply's are,
    which the store skips), and some are empty (served as absent)."""
    import random

    from exporter.exposition import Family
    from exporter.store import Snapshot, SnapshotStore

    rng = random.Random(7)
    families = [Family(f"cockpit_f{i}", "gauge", f"F{i}.") for i in range(3)]
    store = SnapshotStore()
    store.register(families)
    live: dict[tuple[str, str, str], Snapshot] = {}
    for step in range(600):
        key = (f"t{rng.randrange(12)}", "sql", f"q{rng.randrange(3)}")
        if rng.random() < 0.2:
            store.remove(key)
            live.pop(key, None)
        else:
            last = live[key].bodies if key in live else {}
            bodies = {
                f.name: f'{f.name}{{tenant="{key[0]}",q="{key[2]}"}} {step}\n'.encode()
                for f in rng.sample(families, rng.randrange(1, 4))
            }
            for name in bodies:
                if name in last and rng.random() < 0.5:
                    bodies[name] = last[name]  # the same object, not an equal copy
                elif rng.random() < 0.1:
                    bodies[name] = b""
            live[key] = Snapshot(key[0], bodies)
            store.put(key, live[key])
        if step % 7 == 0:
            expected = b"".join(
                f.header(False)
                + b"".join(
                    live[k].bodies[f.name]
                    for k in sorted(live, key=lambda k: (k[0], k))
                    if f.name in live[k].bodies
                )
                for f in sorted(families, key=lambda f: f.name)
                if any(s.bodies.get(f.name) for s in live.values())
            )
            assert store.render(False) == expected, step
            tenant = f"t{rng.randrange(12)}"
            assert store.render(False, frozenset({tenant})) == b"".join(
                f.header(False)
                + b"".join(
                    live[k].bodies[f.name]
                    for k in sorted(k for k in live if k[0] == tenant)
                    if f.name in live[k].bodies
                )
                for f in sorted(families, key=lambda f: f.name)
                if any(s.bodies.get(f.name) for k, s in live.items() if k[0] == tenant)
            ), step


def test_an_exposition_goes_out_in_blocks_of_its_pieces_in_order() -> None:
    """The plain answer is written in blocks of about the asked size, every byte once, in
    order; the whole is never one buffer (see store.Exposition)."""
    from exporter.store import Exposition

    chunks = tuple(b"x%d\n" % i * (i % 7) for i in range(2000))
    exposition = Exposition(chunks, sum(map(len, chunks)))
    blocks = list(exposition.blocks(1000))
    assert b"".join(blocks) == exposition.join() and exposition.size == len(exposition.join())
    assert all(1000 <= len(b) < 1000 + max(map(len, chunks)) for b in blocks[:-1])
    assert len(blocks[-1]) > 0 and len(blocks) > 10
    assert list(Exposition((), 0).blocks(1000)) == []
