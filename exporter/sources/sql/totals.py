"""Durable totals of a SQL job's accumulating metrics: `increment` counters, histograms, summaries.

Each run adds its rows as observations; the totals survive restarts through the state store,
written before the run's samples are published (a crash then never shows a total that a
restart takes back: a counter Prometheus saw never goes down).
"""

from dataclasses import dataclass, field
from typing import Any

from exporter.histogram import Histogram

Labels = tuple[str, ...]


@dataclass
class Totals:
    """Per metric, per label set: a running total (counters) or a histogram (and summary)."""

    counters: dict[str, dict[Labels, float]] = field(default_factory=dict)
    histograms: dict[str, dict[Labels, Histogram]] = field(default_factory=dict)

    def size(self) -> int:
        """Label sets held, every metric together."""
        return sum(map(len, self.counters.values())) + sum(map(len, self.histograms.values()))

    def to_state(self) -> dict[str, Any]:
        """What a restart needs."""
        return {
            "counters": {m: [[list(k), v] for k, v in c.items()] for m, c in self.counters.items()},
            "histograms": {
                m: [[list(k), list(h.bounds), h.buckets, h.total, h.count] for k, h in c.items()]
                for m, c in self.histograms.items()
            },
        }

    @classmethod
    def restore(cls, state: dict[str, Any], bounds: dict[str, tuple[float, ...]]) -> "Totals":
        """Totals from `to_state` (ValueError, TypeError, KeyError if malformed).

        A histogram whose configured buckets changed starts over: counts of other bounds
        cannot be re-bucketed.
        """
        totals = cls()
        for metric, rows in state["counters"].items():
            totals.counters[str(metric)] = {_labels(k): float(v) for k, v in rows}
        for metric, rows in state["histograms"].items():
            wanted = bounds.get(str(metric))
            kept = {
                _labels(k): Histogram(wanted, [int(b) for b in counts], float(total), int(n))
                for k, saved, counts, total, n in rows
                if wanted is not None and tuple(map(float, saved)) == wanted
                and len(counts) == len(wanted) + 1
            }  # fmt: skip
            totals.histograms[str(metric)] = kept
        return totals


def _labels(raw: object) -> Labels:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise TypeError("label values must be a list of strings")
    return tuple(raw)
