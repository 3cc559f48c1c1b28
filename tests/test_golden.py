"""The SQL and platform sources' /metrics, byte for byte, against the golden file."""

from pathlib import Path

from tests.golden_metrics import render

GOLDEN = Path(__file__).parent / "golden" / "metrics.prom"


async def test_metrics_are_byte_identical_to_the_golden_file() -> None:
    """Same data, same bytes: names, labels, order, values, HELP and TYPE (only durations and
    our own timestamps are masked). The golden file was written by the code before the
    sources moved behind one interface; the changes since are the runs lag gauge (one family,
    one series more in each runs part), the interval gauge (one series per job), and ids
    instead of names in labels, counters from zero, histograms for durations (PromQL truth).
    Regenerate with `python -m tests.golden_metrics tests/golden/metrics.prom` and read the
    diff."""
    text = await render()
    assert "cockpit_items{" in text and "cockpit_agents{" in text  # both sources present
    assert 'reason="query"' in text  # the broken query failed as before
    assert text == GOLDEN.read_text(encoding="utf-8")
