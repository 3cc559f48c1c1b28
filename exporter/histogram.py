"""Cumulative histograms rendered as Prometheus `_bucket`, `_sum` and `_count` lines."""

import bisect
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from exporter.exposition import format_value


@dataclass
class Histogram:
    """Bucket counts (not cumulative) over fixed upper bounds, plus sum and count."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> str:
        """Sample lines; `labels` are already rendered pairs (`a="x",b="y"`) or empty."""
        prefix = f"{labels}," if labels else ""
        out, cumulative = [], 0
        # `le` as client_python and OpenMetrics spell it (1.0, not 1): the same series as the
        # peers' histograms.
        for bound, count in zip((*map(floatToGoString, self.bounds), "+Inf"), self.buckets,
                                strict=True):  # fmt: skip
            cumulative += count
            out.append(f'{name}_bucket{{{prefix}le="{bound}"}} {cumulative}\n')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {format_value(self.total)}\n")
        out.append(f"{name}_count{braces} {self.count}\n")
        return "".join(out)
