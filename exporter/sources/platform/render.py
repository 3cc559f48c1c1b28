"""Render platform items into sample lines keyed by ids; names live only in `_info` series."""

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime

from exporter.exposition import escape_label_value, format_value
from exporter.histogram import Histogram
from exporter.sources.platform import families as f
from exporter.sources.platform.families import (
    AGENT_STATUSES,
    DURATION_BUCKETS,
    FAILED_STATUSES,
    FINAL_STATUSES,
)
from exporter.sources.platform.models import Agent, Process, Schedule
from exporter.sources.platform.runs import ActiveRun, RunTracker

Bodies = dict[str, bytes]


class Lines:
    """Collects sample lines per family for one tenant."""

    def __init__(self, tenant: str) -> None:
        self._tenant = f'tenant="{escape_label_value(tenant)}"'
        self._lines: dict[str, list[str]] = {}
        self.series = 0

    def add(self, name: str, labels: Mapping[str, str], value: float, family: str = "") -> None:
        """Add one sample of `name` (to family `family`, default the same name)."""
        pairs = "".join(f',{k}="{escape_label_value(v)}"' for k, v in labels.items())
        line = f"{name}{{{self._tenant}{pairs}}} {format_value(value)}\n"
        self._lines.setdefault(family or name, []).append(line)
        self.series += 1

    def histogram(self, name: str, labels: Mapping[str, str], histogram: Histogram) -> None:
        """Add a histogram's bucket, sum and count lines (family `name`)."""
        pairs = "".join(f',{k}="{escape_label_value(v)}"' for k, v in labels.items())
        self._lines.setdefault(name, []).append(histogram.lines(name, f"{self._tenant}{pairs}"))
        self.series += len(histogram.buckets) + 2

    def bodies(self) -> Bodies:
        """The rendered bytes per family."""
        return {name: "".join(lines).encode() for name, lines in self._lines.items()}


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def render_processes(tenant: str, processes: Sequence[Process]) -> Lines:
    """Enabled state of processes by id; names only in the info series."""
    lines = Lines(tenant)
    for process in processes:
        labels = {"process_id": process.id}
        lines.add(f.PROCESS_ENABLED.name, labels, float(process.enabled))
        lines.add(f.PROCESS_INFO.name, labels | {"name": process.name}, 1)
    return lines


def render_agents(tenant: str, agents: Sequence[Agent]) -> Lines:
    """Agent counts per pool and status, and each agent's state by id."""
    lines = Lines(tenant)
    counts = Counter((a.pool, a.status) for a in agents)
    for pool in sorted({a.pool for a in agents}):
        statuses = dict.fromkeys(AGENT_STATUSES, 0) | {
            s: n for (p, s), n in counts.items() if p == pool
        }
        for status, count in statuses.items():
            lines.add(f.AGENTS.name, {"pool": pool, "status": status}, count)
    for agent in agents:
        labels = {"pool": agent.pool, "agent_id": agent.id}
        lines.add(f.AGENT_UP.name, labels, float(agent.status in ("online", "busy")))
        lines.add(f.AGENT_ENABLED.name, labels, float(agent.status != "disabled"))
        heartbeat = _ts(agent.last_heartbeat_at)
        if heartbeat is not None:
            lines.add(f.AGENT_HEARTBEAT.name, labels, heartbeat)
        info = labels | {"name": agent.name, "version": agent.version or ""}
        lines.add(f.AGENT_INFO.name, info, 1)
    return lines


def render_schedules(tenant: str, schedules: Sequence[Schedule]) -> Lines:
    """Each schedule's state by id; its name, process and cron in the info series."""
    lines = Lines(tenant)
    for schedule in schedules:
        labels = {"schedule_id": schedule.id}
        lines.add(f.SCHEDULE_ENABLED.name, labels, float(schedule.enabled))
        for family, moment in (
            (f.SCHEDULE_NEXT, schedule.next_run_at),
            (f.SCHEDULE_LAST, schedule.last_run_at),
        ):
            if moment is not None:
                lines.add(family.name, labels, moment.timestamp())
        # A cancelled run is its own outcome, neither success nor failure: no sample.
        if schedule.last_run_status in ("succeeded", *FAILED_STATUSES):
            success = float(schedule.last_run_status == "succeeded")
            lines.add(f.SCHEDULE_SUCCESS.name, labels, success)
        info = {"name": schedule.name, "process_id": schedule.process_id, "cron": schedule.cron}
        lines.add(f.SCHEDULE_INFO.name, labels | info, 1)
    return lines


def render_runs(tenant: str, tracker: RunTracker, now: float) -> Lines:
    """Finished-run counters, duration histograms, queued/running gauges per process, lag."""
    lines = Lines(tenant)
    lag = tracker.lag(now)
    if lag is not None:
        lines.add(f.RUNS_LAG.name, {}, lag)
    active: dict[str, list[ActiveRun]] = {}
    for run in tracker.active.values():  # grouped once: a long queue is not scanned per process
        active.setdefault(run.process_id, []).append(run)
    for process_id in sorted(set(tracker.seen) | set(active)):
        process = {"process_id": process_id}
        # Every final status from zero, so rate() sees the first failure of a process.
        for status in FINAL_STATUSES:
            count = tracker.finished[(process_id, status)]
            lines.add(f.RUNS_FINISHED.name, process | {"status": status}, count)
        _histogram(lines, process, tracker, process_id)
        _active(lines, process, active.get(process_id, []))
    return lines


def _histogram(lines: Lines, labels: dict[str, str], tracker: RunTracker, process_id: str) -> None:
    histogram = tracker.durations.get(process_id) or Histogram(DURATION_BUCKETS)
    lines.histogram(f.RUN_DURATION.name, labels, histogram)


def _active(lines: Lines, labels: dict[str, str], runs: list[ActiveRun]) -> None:
    queued = [r for r in runs if r.status == "queued"]
    lines.add(f.RUNS_QUEUED.name, labels, len(queued))
    lines.add(f.RUNS_RUNNING.name, labels, sum(1 for r in runs if r.status == "running"))
    if queued:
        lines.add(f.RUNS_OLDEST_QUEUED.name, labels, min(r.since for r in queued))
