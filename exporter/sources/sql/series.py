"""Turn result rows into pre-rendered sample lines for a query's metrics."""

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NoReturn

from exporter.config import MetricSpec
from exporter.errors import CollectionError
from exporter.exposition import escape_label_value, format_value
from exporter.histogram import Histogram
from exporter.sources.base import Rendered
from exporter.sources.sql import cells
from exporter.sources.sql.totals import Totals


def build_series(
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    metrics: Sequence[MetricSpec],
    tenant: str,
    max_series: int,
    *,
    totals: Totals | None = None,
    labels: Sequence[tuple[str, str]] = (),
) -> Rendered:
    """Render every metric of a query from its rows; bad values fail the whole query.

    Accumulating metrics (`increment` counters, histograms, summaries) add the rows to
    `totals` and render the totals. `labels` are the tenant's own, after `tenant`.
    """
    index = {name: i for i, name in enumerate(columns)}
    result = Rendered()
    own = "".join(f',{k}="{escape_label_value(v)}"' for k, v in labels)  # the tenant's labels
    budget = _Budget(f'tenant="{escape_label_value(tenant)}"{own}', max_series, result)
    for metric in metrics:
        _check_columns(metric, index, columns)
        if metric.type == "enum":
            lines = _enum_lines(metric, _samples(metric, rows, index, result), budget)
        elif metric.accumulates:
            kept = totals if totals is not None else Totals()
            lines = _total_lines(metric, _samples(metric, rows, index, result), budget, kept)
        elif metric.values or metric.null_label is not None:
            lines = _sample_lines(metric, _samples(metric, rows, index, result), budget)
        else:
            lines = _metric_lines(metric, rows, index, budget)
        result.lines[metric.name] = lines
    return result


@dataclass
class _Budget:
    """What every metric of one run shares: the tenant label and the series limit."""

    tenant_pair: str
    max_series: int
    result: Rendered

    def take(self) -> bool:
        """Count one more series, or one dropped past the limit (False)."""
        if self.result.series >= self.max_series:
            self.result.dropped += 1
            return False
        self.result.series += 1
        return True

    def prefix(self, name: str, label_names: Sequence[str], labels: Sequence[str]) -> str:
        """`name{tenant="…",a="…"`, without the closing brace."""
        pairs = "".join(
            f',{k}="{escape_label_value(v)}"' for k, v in zip(label_names, labels, strict=True)
        )
        return f"{name}{{{self.tenant_pair}{pairs}"


def _check_columns(metric: MetricSpec, index: dict[str, int], columns: Sequence[str]) -> None:
    missing = [c for c in (*metric.columns, *metric.labels) if c not in index]
    if missing:
        raise CollectionError(
            "value",
            f"metric {metric.name}: column(s) {', '.join(missing)} not in result "
            f"(columns: {', '.join(columns) or 'none'})",
        )


Sample = tuple[tuple[str, ...], object]


def _samples(
    metric: MetricSpec, rows: Sequence[Sequence[object]], index: dict[str, int], result: Rendered
) -> Iterator[Sample]:
    """(label values, raw value) per row and value column; NULLs skipped and counted."""
    label_at = [index[label] for label in metric.labels]
    value_at = [(column, index[column]) for column in metric.columns]
    several = bool(metric.value_label)
    for row in rows:
        found = [row[i] for i in label_at]
        if None in found:
            if metric.null_label is None:  # one rule: the row is skipped and counted
                result.nulls += 1
                continue
            found = [metric.null_label if c is None else c for c in found]
        labels = tuple([_label_text(c) for c in found])
        for column, at in value_at:
            raw = row[at]
            if raw is None:
                result.nulls += 1
                continue
            yield ((*labels, column) if several else labels), raw


def _names(metric: MetricSpec) -> tuple[str, ...]:
    return (*metric.labels, metric.value_label) if metric.value_label else metric.labels


def _sample_lines(metric: MetricSpec, samples: Iterable[Sample], budget: _Budget) -> list[str]:
    """Gauges and counters from several value columns, or with `null_label`."""
    lines: list[str] = []
    seen: set[tuple[str, ...]] = set()
    names, counter = _names(metric), metric.type == "counter"
    for labels, raw in samples:
        value = _value_text(raw, metric)
        if counter and value.startswith("-"):  # a counter cannot be negative
            budget.result.invalid += 1
            continue
        if labels in seen:
            budget.result.duplicates += 1
            continue
        seen.add(labels)
        if budget.take():
            lines.append(f"{budget.prefix(metric.name, names, labels)}}} {value}\n")
    return lines


def _enum_lines(metric: MetricSpec, samples: Iterable[Sample], budget: _Budget) -> list[str]:
    """One series per state, 1 for the row's state and 0 for the others (a StateSet)."""
    lines: list[str] = []
    seen: set[tuple[str, ...]] = set()
    names = _names(metric)
    for labels, raw in samples:
        state = _label_text(raw)
        if state not in metric.states:
            raise CollectionError(
                "value", f"metric {metric.name}: {state[:40]!r} is not one of its states"
            )
        if labels in seen:
            budget.result.duplicates += 1
            continue
        seen.add(labels)
        prefix = budget.prefix(metric.name, names, labels)
        for option in metric.states:
            if budget.take():
                lines.append(
                    f'{prefix},{metric.name}="{escape_label_value(option)}"}} '
                    f"{int(option == state)}\n"
                )
    return lines


def _total_lines(
    metric: MetricSpec, samples: Iterable[Sample], budget: _Budget, totals: Totals
) -> list[str]:
    """Add the run's observations to the durable totals, then render every total."""
    if metric.type == "counter":
        counts = totals.counters.setdefault(metric.name, {})
        for labels, raw in samples:
            number = float(_value_text(raw, metric))
            if number < 0:  # a counter cannot go down
                budget.result.invalid += 1
            elif labels in counts or _room(totals, budget):
                counts[labels] = counts.get(labels, 0.0) + number
        return _rendered(metric, budget, sorted(counts.items()))
    histograms = totals.histograms.setdefault(metric.name, {})
    for labels, raw in samples:
        if labels in histograms or _room(totals, budget):
            histogram = histograms.setdefault(labels, Histogram(metric.buckets))
            histogram.observe(float(_value_text(raw, metric)))
    return _rendered(metric, budget, sorted(histograms.items()))


def _room(totals: Totals, budget: _Budget) -> bool:
    """Whether a new label set fits under the series limit (totals are kept for good)."""
    if totals.size() < budget.max_series:
        return True
    budget.result.dropped += 1
    return False


def _rendered(
    metric: MetricSpec, budget: _Budget, items: Sequence[tuple[tuple[str, ...], object]]
) -> list[str]:
    names, lines = _names(metric), []
    for labels, total in items:
        budget.result.series += 1
        prefix = budget.prefix(metric.name, names, labels)
        if isinstance(total, Histogram):
            pairs = prefix.split("{", 1)[1]
            if metric.type == "histogram":
                lines.append(total.lines(metric.name, pairs))
            else:  # a summary: count and sum, no quantiles
                lines.append(f"{metric.name}_sum{{{pairs}}} {format_value(total.total)}\n"
                             f"{metric.name}_count{{{pairs}}} {total.count}\n")  # fmt: skip
        else:
            lines.append(f"{prefix}}} {format_value(float(total))}\n")  # type: ignore[arg-type]
    return lines


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
    null_label, counter = metric.null_label, metric.type == "counter"
    for row in rows:
        raw = row[value_at]
        if raw is None:
            result.nulls += 1
            continue
        value = _value_text(raw, metric)
        cells_ = [row[i] for i in label_at]
        if None in cells_:
            if null_label is None:  # one rule: the row is skipped and counted
                result.nulls += 1
                continue
            cells_ = [null_label if c is None else c for c in cells_]
        labels = tuple([_label_text(c) for c in cells_])
        if counter and value.startswith("-"):  # a counter cannot be negative
            result.invalid += 1
            continue
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
    if isinstance(raw, cells.Bits | str) and type(raw) is not str:  # MySQL's typed text
        try:
            text = cells.number_text(raw)
        except ValueError:  # a zero date, say: no instant
            text = None
        if text is not None:
            return text
        _not_a_number(raw, metric)
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
    _not_a_number(raw, metric)


def _not_a_number(raw: object, metric: MetricSpec) -> NoReturn:
    shown = repr(str(raw) if isinstance(raw, str) else raw)[:40]
    raise CollectionError(
        "value", f"metric {metric.name}: non-numeric value {shown} in column {metric.value}"
    )


def _label_text(raw: object) -> str:
    if isinstance(raw, str):  # MySQL's typed text too: the server's own spelling
        return raw
    if isinstance(raw, cells.Bits):
        return str(raw)
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, dt.datetime | dt.date):
        return raw.isoformat()
    return str(raw)
