"""Cumulative histograms rendered as Prometheus `_bucket`, `_sum` and `_count` lines."""

import bisect
import functools
import time
from dataclasses import dataclass, field

from prometheus_client.utils import floatToGoString

from exporter.exposition import format_value


@functools.lru_cache(maxsize=64)
def _le(bounds: tuple[float, ...]) -> tuple[str, ...]:
    # `le` as client_python and OpenMetrics spell it (1.0, not 1): the same series as the
    # peers' histograms. Spelled once per set of bounds, shared by every histogram that has
    # them: rendering is frequent, and thousands of histograms each holding their own
    # strings were 3 MB at a thousand tenants.
    return (*map(floatToGoString, bounds), "+Inf")


@dataclass
class Histogram:
    """Bucket counts (not cumulative) over fixed upper bounds, plus sum and count."""

    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0
    # Per bucket, the latest observation that came with a trace id: (trace id, value, time).
    exemplars: dict[int, tuple[str, float, float]] = field(default_factory=dict)
    _le: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.buckets:
            self.buckets = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._le = _le(self.bounds)

    def observe(self, value: float, trace_id: str | None = None) -> None:
        """Add one observation; with a trace id, it becomes its bucket's exemplar."""
        bucket = bisect.bisect_left(self.bounds, value)
        self.buckets[bucket] += 1
        self.total += value
        self.count += 1
        if trace_id is not None:
            self.exemplars[bucket] = (trace_id, value, time.time())

    def lines(self, name: str, labels: str, exemplars: bool = False) -> str:
        """Sample lines; `labels` are already rendered pairs (`a="x",b="y"`) or empty.

        With `exemplars`, OpenMetrics exemplars follow the buckets that have one.
        """
        prefix = f"{labels}," if labels else ""
        out, cumulative = [], 0
        for index, (bound, count) in enumerate(zip(self._le, self.buckets, strict=True)):
            cumulative += count
            line = f'{name}_bucket{{{prefix}le="{bound}"}} {cumulative}'
            exemplar = self.exemplars.get(index) if exemplars else None
            if exemplar is not None:
                trace_id, value, at = exemplar
                line += f' # {{trace_id="{trace_id}"}} {format_value(value)} {at:.3f}'
            out.append(line + "\n")
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {format_value(self.total)}\n")
        out.append(f"{name}_count{braces} {self.count}\n")
        return "".join(out)
