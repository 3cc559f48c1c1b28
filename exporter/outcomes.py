"""Publish a collection run's outcome: snapshot, self-metrics and one log line, for any source.

One rule for every source kind: counters and histograms are totals so far and stay served
after a failed run; gauges say how things are, so they are served only while their data is
younger than the job's `stale_after` (counted from its last success), then withdrawn and
Prometheus marks them stale. Nothing restored at start-up is a gauge: a restart never makes
old gauges look new.
"""

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog

from exporter.errors import CollectionError
from exporter.selfmetrics import JobStats
from exporter.store import Snapshot, SnapshotKey, SnapshotStore

log = structlog.get_logger(__name__)
LASTING_KINDS = frozenset({"counter", "histogram", "summary"})


@dataclass
class Served:
    """A part's data series: counters and histograms for good, gauges until `until`."""

    lasting: dict[str, bytes] = field(default_factory=dict)
    fading: dict[str, bytes] = field(default_factory=dict)
    until: float = 0.0

    @classmethod
    def split(cls, bodies: Mapping[str, bytes], kind: Callable[[str], str]) -> "Served":
        """Sort a run's bodies by family kind (`kind` names a family's type)."""
        served = cls()
        for name, body in bodies.items():
            (served.lasting if kind(name) in LASTING_KINDS else served.fading)[name] = body
        return served

    def put(self, store: SnapshotStore, key: SnapshotKey, stats: JobStats) -> None:
        """Publish with the job's self-metrics; the gauges leave the store at `until`."""
        # Each snapshot's bodies built in one go: merging them step by step copied each twice.
        slow, fast = stats.layers()
        without = Snapshot(stats.tenant, {**self.lasting, **slow, **fast})
        if self.fading and self.until > time.time():
            whole = Snapshot(stats.tenant, {**self.lasting, **self.fading, **slow, **fast})
            store.put(key, whole, self.until, without)
        else:
            store.put(key, without)


def publish_success(
    store: SnapshotStore,
    key: SnapshotKey,
    stats: JobStats,
    *,
    duration: float,
    series: int,
    served: Served,
    stale_after: float,
    **context: object,
) -> None:
    """Replace the job's snapshot with fresh data and mark the run successful."""
    stats.record_success(duration, series)
    served.until = (stats.last_success or time.time()) + stale_after
    served.put(store, key, stats)
    # Successes are debug: at hundreds of runs a minute they would drown the log;
    # failures are warnings, always shown. Checked first: the fields cost more than the run's
    # store update when nobody reads them.
    if log.is_enabled_for(logging.DEBUG):
        log.debug("collection run", **_fields(stats, duration, series), outcome="success",
                  **context)  # fmt: skip


def publish_failure(
    store: SnapshotStore,
    key: SnapshotKey,
    stats: JobStats,
    *,
    duration: float,
    error: CollectionError,
    served: Served,
) -> None:
    """Serve the last success's counters (and its gauges while fresh) and log why it failed."""
    stats.record_failure(duration, error.reason, str(error))
    served.put(store, key, stats)
    log.warning(
        "collection run",
        **_fields(stats, duration, 0),
        outcome="failure",
        reason=error.reason,
        error=str(error),
    )


def _fields(stats: JobStats, duration: float, series: int) -> dict[str, object]:
    return {
        "tenant": stats.tenant,
        "source": stats.source,
        "query": stats.query,
        "duration_ms": round(duration * 1000, 2),
        "series": series,
    }
