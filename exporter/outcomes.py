"""Publish a collection run's outcome: snapshot, self-metrics and one log line, for any source."""

import structlog

from exporter.errors import CollectionError
from exporter.selfmetrics import JobStats
from exporter.store import Snapshot, SnapshotKey, SnapshotStore

log = structlog.get_logger(__name__)


def publish_success(
    store: SnapshotStore,
    key: SnapshotKey,
    stats: JobStats,
    *,
    duration: float,
    series: int,
    bodies: dict[str, bytes],
    **context: object,
) -> None:
    """Replace the job's snapshot with fresh data and mark the run successful."""
    stats.record_success(duration, series)
    store.put(key, Snapshot(stats.tenant, bodies | stats.render()))
    # Successes are debug: at hundreds of runs a minute they would drown the log;
    # failures are warnings, always shown.
    log.debug("collection run", **_fields(stats, duration, series), outcome="success", **context)


def publish_failure(
    store: SnapshotStore,
    key: SnapshotKey,
    stats: JobStats,
    *,
    duration: float,
    error: CollectionError,
    kept: dict[str, bytes] | None = None,
) -> None:
    """Replace the job's snapshot with its self-metrics (plus `kept` series) and log why."""
    stats.record_failure(duration, error.reason, str(error))
    store.put(key, Snapshot(stats.tenant, (kept or {}) | stats.render()))
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
