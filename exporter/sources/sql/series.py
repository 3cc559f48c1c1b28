"""Turn result rows into pre-rendered sample lines for a query's metrics."""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from exporter.config import MetricSpec
from exporter.errors import CollectionError
from exporter.exposition import escape_label_value, format_value
from exporter.sources.base import Rendered


def build_series(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    metrics: Sequence[MetricSpec],
    tenant: str,
    max_series: int,
) -> Rendered:
    """Render every metric of a query from its rows; bad values fail the whole query."""
    index = {name: i for i, name in enumerate(columns)}
    result = Rendered()
    tenant_pair = f'tenant="{escape_label_value(tenant)}"'
    for metric in metrics:
        _check_columns(metric, index, columns)
        result.lines[metric.name] = _metric_lines(
            metric, rows, index, _Budget(tenant_pair, max_series, result)
        )
    return result


@dataclass
class _Budget:
    """What every metric of one run shares: the tenant label and the series limit."""

    tenant_pair: str
    max_series: int
    result: Rendered


def _check_columns(metric: MetricSpec, index: dict[str, int], columns: Sequence[str]) -> None:
    missing = [c for c in (metric.value, *metric.labels) if c not in index]
    if missing:
        raise CollectionError(
            "value",
            f"metric {metric.name}: column(s) {', '.join(missing)} not in result "
            f"(columns: {', '.join(columns) or 'none'})",
        )


def _metric_lines(
    metric: MetricSpec, rows: Sequence[Sequence[object]], index: dict[str, int], budget: _Budget
) -> list[str]:
    value_at, label_at = index[metric.value], [index[label] for label in metric.labels]
    # One format template per metric keeps the per-row work to a single C-level call.
    pairs = "".join(f',{name}="{{}}"' for name in metric.labels)
    template = f"{metric.name}{{{{{budget.tenant_pair}{pairs}}}}} {{}}\n"
    result = budget.result
    lines: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for row in rows:
        raw = row[value_at]
        if raw is None:
            result.nulls += 1
            continue
        value = _value_text(raw, metric)
        labels = tuple([_label_text(row[i]) for i in label_at])
        if labels in seen:
            result.duplicates += 1
            continue
        seen.add(labels)
        if result.series >= budget.max_series:
            result.dropped += 1
            continue
        result.series += 1
        lines.append(template.format(*map(escape_label_value, labels), value))
    return lines


def _value_text(raw: object, metric: MetricSpec) -> str:
    # COUNT(*) and friends return ints: render them exactly, without a float round trip.
    if type(raw) is int:
        return str(raw)
    return format_value(to_number(raw, metric))


def to_number(raw: object, metric: MetricSpec) -> float:
    """Convert a SQL value to a float, or fail naming the metric and the value."""
    if isinstance(raw, int | float | Decimal):  # bool is an int too: true/false -> 1/0
        return float(raw)
    if isinstance(raw, dt.datetime):
        # Naive datetimes are read as UTC, the only zone a timestamp column can safely assume.
        aware = raw if raw.tzinfo else raw.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    if isinstance(raw, str | bytes):
        try:
            return float(raw)
        except ValueError:
            pass
    shown = repr(raw)[:40]
    raise CollectionError(
        "value", f"metric {metric.name}: non-numeric value {shown} in column {metric.value}"
    )


def _label_text(raw: object) -> str:
    if type(raw) is str:
        return raw
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, dt.datetime | dt.date):
        return raw.isoformat()
    return str(raw)
