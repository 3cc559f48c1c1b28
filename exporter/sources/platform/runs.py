"""Incremental run polling: every run that reaches a final status is counted exactly once.

Polls ask for runs updated since the cursor (the newest `updated_at` seen) minus an overlap
window, so late writes on the platform are not missed. A final run is remembered while it can
still come back in that window and forgotten after, which bounds memory by the runs finishing
within one overlap window. The first poll looks back `history` to find runs still queued or
running; the finished runs it sees are history and not counted (unless within `lookback`).
"""

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from exporter.histogram import Histogram
from exporter.sources.platform.families import DURATION_BUCKETS, FINAL_STATUSES
from exporter.sources.platform.models import Run


class ActiveRun(NamedTuple):
    """What the queued and running gauges need of a run not finished yet.

    A few fields instead of the whole run record: a platform with a long queue keeps many
    of these per tenant.
    """

    process_id: str
    status: str
    since: float  # queued_at, else updated_at (Unix time)
    updated: float  # updated_at, to forget runs that stop being reported


@dataclass
class RunTracker:
    """Cursor, de-duplication and counts of one tenant's runs.

    A poll is `begin`, one `page` per page of runs (oldest first, so the cursor may advance
    page by page and a failed poll keeps what its pages brought), and `complete` when the
    last page arrived.
    """

    overlap: float
    lookback: float
    history: float
    cursor: float | None = None
    baselined: bool = False
    counted: dict[str, float] = field(default_factory=dict)
    active: dict[str, ActiveRun] = field(default_factory=dict)
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)
    durations: dict[str, Histogram] = field(default_factory=dict)
    reached: float | None = None  # every run updated before this is known
    # Process id -> when the platform last listed it or a run of it was counted: its
    # series are served from zero while known, and forgotten `forget_after` later.
    seen: dict[str, float] = field(default_factory=dict)
    _poll_started: float = 0.0

    def since(self, now: float) -> float:
        """The `updated_since` of the next poll."""
        if self.cursor is None:
            return now - max(self.history, self.lookback)
        return self.cursor - self.overlap

    def begin(self, now: float) -> None:
        """A poll starts at `now`."""
        self._poll_started = now

    def page(self, runs: list[Run]) -> None:
        """Apply one page's runs (duplicates allowed)."""
        # Until one poll has completed, finished runs are history, not news.
        count_after = self._poll_started - self.lookback if not self.baselined else None
        for run in runs:
            updated = run.updated_at.timestamp()
            self.cursor = updated if self.cursor is None else max(self.cursor, updated)
            if run.status not in FINAL_STATUSES:
                since = (run.queued_at or run.updated_at).timestamp()
                # A long queue holds tens of thousands of these: one shared string per
                # process and status, not one per run as the JSON parser made them.
                process, status = sys.intern(run.process_id), sys.intern(run.status)
                self.active[run.id] = ActiveRun(process, status, since, updated)
                continue
            self.active.pop(run.id, None)
            if run.id in self.counted:
                continue
            self.counted[run.id] = updated
            if count_after is None or (self.lookback and _finished_at(run) >= count_after):
                self._count(run)

    def complete(self) -> None:
        """The poll saw every page: the platform is known up to when the poll started."""
        self.baselined = True
        self.reached = self._poll_started
        self._forget(self._poll_started)

    def update(self, runs: list[Run], now: float) -> None:
        """A whole poll at once (one page)."""
        self.begin(now)
        self.page(runs)
        self.complete()

    def lag(self, now: float) -> float | None:
        """How far behind the platform the counts are; None before a first complete poll."""
        if self.reached is None:
            return None
        return max(0.0, now - max(self.reached, self.cursor or 0.0))

    def listed(self, process_ids: list[str], now: float, forget_after: float) -> None:
        """The platform lists these processes now; forget those gone for `forget_after`."""
        for process_id in process_ids:
            self.seen[process_id] = now
        waiting = {run.process_id for run in self.active.values()}
        gone = {p for p, t in self.seen.items() if t < now - forget_after and p not in waiting}
        if not gone:
            return
        self.seen = {p: t for p, t in self.seen.items() if p not in gone}
        self.finished = Counter({k: n for k, n in self.finished.items() if k[0] not in gone})
        self.durations = {p: h for p, h in self.durations.items() if p not in gone}

    def _count(self, run: Run) -> None:
        self.finished[(run.process_id, run.status)] += 1
        self.seen[run.process_id] = max(self.seen.get(run.process_id, 0.0), self._poll_started)
        if run.started_at is not None and run.finished_at is not None:
            seconds = (run.finished_at - run.started_at).total_seconds()
            histogram = self.durations.setdefault(run.process_id, Histogram(DURATION_BUCKETS))
            histogram.observe(max(0.0, seconds))

    def _forget(self, now: float) -> None:
        if self.cursor is not None:
            # Older than the next poll's window: those runs cannot be returned again.
            horizon = self.cursor - self.overlap
            self.counted = {i: u for i, u in self.counted.items() if u >= horizon}
        # A run that never reaches a final status we see (deleted, say) must not count as
        # queued forever.
        stale = now - self.history
        self.active = {i: r for i, r in self.active.items() if r.updated >= stale}

    def to_state(self) -> dict[str, Any]:
        """What a restart needs to go on counting exactly once."""
        return {
            "cursor": self.cursor,
            "reached": self.reached,
            "baselined": self.baselined,
            "counted": self.counted,
            "active": {i: list(run) for i, run in self.active.items()},
            "finished": [[p, s, n] for (p, s), n in sorted(self.finished.items())],
            "bounds": list(DURATION_BUCKETS),
            "durations": {p: _histogram_state(h) for p, h in self.durations.items()},
            "seen": self.seen,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a saved state (ValueError, TypeError or KeyError if it is malformed)."""
        self.cursor = _optional_float(state["cursor"])
        self.reached = _optional_float(state["reached"])
        self.baselined = bool(state["baselined"])
        self.counted = {str(i): float(u) for i, u in state["counted"].items()}
        self.active = {
            str(i): ActiveRun(sys.intern(str(p)), sys.intern(str(s)), float(since), float(u))
            for i, (p, s, since, u) in state["active"].items()
        }
        self.finished = Counter({(str(p), str(s)): int(n) for p, s, n in state["finished"]})
        self.durations = {}
        if state.get("bounds") == list(DURATION_BUCKETS):  # other buckets: start them over
            self.durations = {str(p): _histogram(h) for p, h in state["durations"].items()}
        # Records from before `seen`: every process with counts is known as of now.
        seen = state.get("seen") or {p: self.reached or 0.0 for p, _ in self.finished}
        self.seen = {str(p): float(t) for p, t in seen.items()}


def _histogram(state: dict[str, Any]) -> Histogram:
    buckets = [int(b) for b in state["buckets"]]
    if len(buckets) != len(DURATION_BUCKETS) + 1:
        raise ValueError("histogram buckets do not match the bounds")
    return Histogram(DURATION_BUCKETS, buckets, float(state["total"]), int(state["count"]))


def _histogram_state(histogram: Histogram) -> dict[str, Any]:
    return {"buckets": histogram.buckets, "total": histogram.total, "count": histogram.count}


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _finished_at(run: Run) -> float:
    moment = run.finished_at or run.updated_at
    return moment.timestamp()
