"""Turn JSON pages into sample lines: items selected by JSONPath, labelled, counted or valued."""

from collections import Counter
from collections.abc import Sequence

from exporter.errors import CollectionError
from exporter.exposition import escape_label_value, format_value
from exporter.sources.base import Rendered
from exporter.sources.http_json.config import Metric
from exporter.sources.http_json.paths import find

_MISSING = object()


def extract(
    tenant: str, metrics: Sequence[Metric], pages: Sequence[object], max_series: int
) -> Rendered:
    """Every metric over every page; a value that is not a number fails the run (`value`)."""
    out = Rendered()
    for metric in metrics:
        items = [item for page in pages for item in find(metric.items, page)]
        for labels, value in _samples(metric, items, out):
            if metric.type == "counter" and value < 0:  # a counter cannot be negative
                out.invalid += 1
                continue
            if out.series >= max_series:
                out.dropped += 1
                continue
            pairs = [("tenant", tenant), *labels]
            rendered = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
            out.lines.setdefault(metric.name, []).append(
                f"{metric.name}{{{rendered}}} {format_value(value)}\n"
            )
            out.series += 1
    return out


def _samples(
    metric: Metric, items: list[object], out: Rendered
) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    """(labels, value) per label set, by the metric's `value` rule."""
    counts: Counter[tuple[tuple[str, str], ...]] = Counter()
    values: dict[tuple[tuple[str, str], ...], float] = {}
    if metric.value == "count" and not metric.labels:
        return [((), float(len(items)))]
    for item in items:
        labels = _labels(metric, item)
        if labels is None:
            out.nulls += 1
            continue
        if metric.value == "count":
            counts[labels] += 1
            continue
        number = _number(metric, metric.value.removeprefix("sum:"), item)
        if number is None:
            out.nulls += 1
        elif metric.value.startswith("sum:"):
            values[labels] = values.get(labels, 0.0) + number
        elif labels in values:
            out.duplicates += 1
        else:
            values[labels] = number
    source = counts if metric.value == "count" else values
    return [(labels, float(value)) for labels, value in source.items()]


def _labels(metric: Metric, item: object) -> tuple[tuple[str, str], ...] | None:
    labels = []
    for name, path in metric.labels.items():
        found = _first(path, item)
        if found is _MISSING or found is None:
            return None
        if isinstance(found, dict | list):
            raise CollectionError(
                "value", f"{metric.name}: label {name} at {path} is not a string or number"
            )
        labels.append((name, _text(found)))
    return tuple(labels)


def _number(metric: Metric, path: str, item: object) -> float | None:
    found = _first(path, item)
    if found is _MISSING or found is None:
        return None
    if isinstance(found, int | float) and not isinstance(found, bool):
        return float(found)
    if isinstance(found, str):
        try:
            return float(found)
        except ValueError:
            pass
    shown = repr(found)[:40]
    raise CollectionError("value", f"{metric.name}: value at {path} is not a number: {shown}")


def _first(path: str, item: object) -> object:
    found = find(path, item)
    return found[0] if found else _MISSING


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
