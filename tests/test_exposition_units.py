"""Exact bytes of the exposition helpers and the snapshot store, in-process."""

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
    assert body == 'cockpit_process_enabled{tenant="acme",process="x\ufffd"} 1\n'.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (2.0, "2"), (0.25, "0.25"), (float("nan"), "NaN"), (float("-inf"), "-Inf")],
)
def test_format_value(value: float, text: str) -> None:
    """Integral values print short; NaN and infinities in the spelling both parsers accept."""
    assert format_value(value) == text


def test_store_renders_exact_bytes_and_groups() -> None:
    """Families sorted, headers once, tenants filtered, operators-only series hidden from
    filtered scrapes, OpenMetrics counter names without _total and a final EOF."""
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
        b"# TYPE cockpit_y counter\n# HELP cockpit_y Y.\ncockpit_y_total 5\n# EOF\n"
    )
    store.remove(("a", "s", "q"))
    assert b'tenant="a"' not in store.render(openmetrics=False)


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
