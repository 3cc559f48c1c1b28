"""RunTracker: history is not counted, look-back counts once, duplicates never, memory bounded."""

from datetime import UTC, datetime

from exporter.sources.platform.models import Run
from exporter.sources.platform.runs import RunTracker

NOW = 1_800_000_000.0


def run(run_id: str, status: str, updated: float, started: float | None = None) -> Run:
    def at(t: float | None) -> datetime | None:
        return None if t is None else datetime.fromtimestamp(t, UTC)

    final = status in ("succeeded", "failed", "cancelled", "timed_out")
    return Run(
        id=run_id, process_id="p1", status=status, updated_at=at(updated),
        started_at=at(started), finished_at=at(updated) if final else None,
    )  # fmt: skip


def test_history_is_baseline_and_new_runs_count_once() -> None:
    """Finished runs seen by the first poll are history; later ones count once each."""
    tracker = RunTracker(overlap=60, lookback=0, history=86400)
    assert tracker.since(NOW) == NOW - 86400
    tracker.update([run("old", "succeeded", NOW - 500), run("q", "queued", NOW - 10)], NOW)
    assert sum(tracker.finished.values()) == 0
    assert list(tracker.active) == ["q"]
    assert tracker.since(NOW) == NOW - 10 - 60
    done = run("q", "failed", NOW + 20, started=NOW - 5)
    tracker.update([done, done], NOW + 30)  # the same run on two pages
    tracker.update([done], NOW + 60)  # and again in the overlapping next poll
    assert tracker.finished == {("p1", "failed"): 1}
    assert tracker.durations["p1"].count == 1 and tracker.durations["p1"].total == 25
    assert tracker.active == {}


def test_lookback_counts_recent_history_once() -> None:
    """With a look-back, runs finished within it before start are counted, older ones not."""
    tracker = RunTracker(overlap=60, lookback=600, history=86400)
    tracker.update([run("a", "succeeded", NOW - 3000), run("b", "succeeded", NOW - 300)], NOW)
    assert tracker.finished == {("p1", "succeeded"): 1}
    tracker.update([run("b", "succeeded", NOW - 300)], NOW + 30)
    assert tracker.finished == {("p1", "succeeded"): 1}


def test_dedup_memory_is_bounded_by_the_overlap_window() -> None:
    """Finished runs older than the next poll's window are forgotten."""
    tracker = RunTracker(overlap=60, lookback=0, history=86400)
    tracker.update([], NOW)
    for minute in range(100):
        t = NOW + minute * 60
        tracker.update([run(f"r{minute}-{i}", "succeeded", t) for i in range(10)], t)
    assert sum(tracker.finished.values()) == 1000
    assert len(tracker.counted) <= 20


def test_queued_runs_share_their_process_and_status_strings() -> None:
    """Runs parsed from separate JSON answers keep one string per process and status, not
    one per run: a platform with a long queue holds tens of thousands of them."""
    import json

    tracker = RunTracker(overlap=60, lookback=0, history=86400)
    stamp = datetime.fromtimestamp(NOW, UTC).isoformat()
    for page in range(2):
        body = json.loads(json.dumps([
            {"id": f"r{page}-{i}", "process_id": "nightly-" + "x" * 30, "status": "queued",
             "updated_at": stamp} for i in range(3)
        ]))  # fmt: skip
        tracker.page([Run.model_validate(item) for item in body])
    active = list(tracker.active.values())
    assert len(active) == 6
    assert all(a.process_id is active[0].process_id for a in active)
    assert all(a.status is active[0].status for a in active)
