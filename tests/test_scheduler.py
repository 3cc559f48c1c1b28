"""Scheduling: first runs spread over the interval, never two runs of one job at once."""

import asyncio

from exporter.config import parse_config
from exporter.scheduler import Scheduler, first_run_offset
from tests.helpers import eventually

CONFIG = """
tenants:
{tenants}
queries:
  - name: q
    sql: SELECT 1 AS v
    interval: 60s
    metrics: [{{name: cockpit_v, type: gauge, help: V., value: v}}]
"""


def test_first_runs_are_spread_over_the_interval() -> None:
    """200 jobs' first runs land all over the interval, not in a burst at start-up."""
    tenants = "\n".join(f"  - {{id: t{i}, mysql: {{dsn: 'sqlite:///x.db'}}}}" for i in range(200))
    jobs = parse_config(CONFIG.format(tenants=tenants), "x").jobs
    offsets = [first_run_offset(f"{job.tenant}/{job.query.name}", 60.0) for job in jobs]
    assert all(0 <= o < 60 for o in offsets)
    buckets = [sum(1 for o in offsets if b * 6 <= o < (b + 1) * 6) for b in range(10)]
    assert max(buckets) < 40, buckets  # 20 per bucket when even; no bucket near a burst
    assert offsets == [first_run_offset(f"{j.tenant}/{j.query.name}", 60.0) for j in jobs]  # stable


async def test_a_slow_run_is_never_overlapped() -> None:
    """A run longer than its interval is not started again until it ends; misses coalesce."""
    job = parse_config(
        CONFIG.format(tenants="  - {id: a, mysql: {dsn: 'sqlite:///x.db'}}")
        .replace("60s", "0.2s")
        .replace("interval: 0.2s", "interval: 0.2s\n    timeout: 0.1s"),
        "x",
    ).jobs[0]
    running = 0
    peak = 0
    runs = 0

    async def slow() -> None:
        nonlocal running, peak, runs
        running += 1
        runs += 1
        peak = max(peak, running)
        await asyncio.sleep(0.7)
        running -= 1

    scheduler = Scheduler()
    scheduler.add("a/q", job.query.interval, slow, spread=False)
    scheduler.start()
    await eventually(lambda: runs >= 3)
    scheduler.shutdown()
    assert peak == 1  # each run waited for the one before, though it took longer than 0.2 s


async def test_jobs_keep_their_offsets_after_the_first_run() -> None:
    """Jobs spread at start stay spread: each later run comes one interval after the last,
    keeping the job's own offset instead of re-aligning every job on one grid."""
    scheduler = Scheduler()

    async def run() -> None:
        return None

    ids = [f"tenant{i}/q" for i in range(20)]
    for job_id in ids:
        scheduler.add(job_id, 30.0, run)
    scheduler.start()
    try:
        for job_id in ids:
            first = scheduler.next_run(job_id)
            slot = scheduler._aps.get_job(f"slot/30/{first_run_offset(job_id, 30.0):g}")
            second = slot.trigger.get_next_fire_time(first, first)
            assert (second - first).total_seconds() == 30.0, job_id
        firsts = {scheduler.next_run(j) for j in ids}
        assert len(firsts) > 5  # spread over the interval, not one instant
    finally:
        scheduler.shutdown()


async def test_a_cron_schedule_fires_on_its_own_times_sharing_one_slot() -> None:
    """`schedule: "*/5 * * * *"`: the job's next run is the next five-minute mark (UTC); jobs
    with the same expression share one APScheduler job."""
    import datetime as dt

    scheduler = Scheduler()

    async def run() -> None:
        return None

    scheduler.add("a/q", 300.0, run, cron="*/5 * * * *")
    scheduler.add("b/q", 300.0, run, cron="*/5 * * * *")
    scheduler.start()
    try:
        first = scheduler.next_run("a/q")
        assert first is not None and first == scheduler.next_run("b/q")
        now = dt.datetime.now(dt.UTC)
        assert first.minute % 5 == 0 and first.second == 0
        assert dt.timedelta(0) < first - now <= dt.timedelta(minutes=5)
        assert len(scheduler._aps.get_jobs()) == 1
    finally:
        scheduler.shutdown()
