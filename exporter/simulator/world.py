"""One tenant's simulated platform: agents, processes, schedules and runs, advanced in 1 s ticks.

Everything random comes from a generator seeded by (seed, tenant), and the world moves in
whole-second ticks from its start, so its state at a given tick is the same on every run.
"""

import bisect
import random
from collections import Counter
from dataclasses import dataclass, field

FINAL = ("succeeded", "failed", "cancelled", "timed_out")
OUTCOMES = (("succeeded", 0.8), ("failed", 0.12), ("cancelled", 0.03), ("timed_out", 0.05))
HEARTBEAT_EVERY = 15
HISTORY = 3600  # seconds of finished runs kept for updated_since queries
QUEUE_TIMEOUT = 900  # a run queued this long without a free agent is cancelled, as on the platform
WARM_UP = 600  # by default the world starts this long before it is first served


@dataclass
class Agent:
    """An agent in a pool; `down_until` > now while it has gone stale on its own."""

    id: str
    name: str
    pool: str
    version: str
    status: str = "online"
    last_heartbeat_at: float | None = None
    down_until: float = 0.0


@dataclass
class Process:
    """A process and the pool whose agents run it."""

    id: str
    name: str
    pool: str
    enabled: bool = True
    max_seconds: int = 600


@dataclass
class Schedule:
    """Fires a run of its process every `every` seconds."""

    id: str
    name: str
    process_id: str
    every: int
    enabled: bool
    next_run_at: float
    last_run_at: float | None = None
    last_run_status: str | None = None

    @property
    def cron(self) -> str:
        """The schedule as a cron expression, as the platform reports it."""
        return f"*/{max(1, self.every // 60)} * * * *"


@dataclass
class Run:
    """A run; `planned` is how long it will take and `outcome` how it will end."""

    id: str
    process_id: str
    schedule_id: str | None
    queued_at: float
    planned: int
    outcome: str
    status: str = "queued"
    agent_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0


@dataclass
class World:
    """A tenant's platform state and its change log ordered by update time."""

    tenant: str
    rng: random.Random
    clock: float
    agents: list[Agent] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)
    runs: dict[str, Run] = field(default_factory=dict)
    # In-flight runs indexed so a tick costs what changes, not the length of the queues:
    # each pool's queue oldest first, and the running runs.
    queues: dict[str, dict[str, Run]] = field(default_factory=dict)
    running: dict[str, Run] = field(default_factory=dict)
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)
    offline_pool: str | None = None
    _log: list[tuple[float, int, str]] = field(default_factory=list)
    _log_offset: int = 0
    _seq: int = 0

    def advance(self, now: float) -> None:
        """Move the world forward to `now`, one second at a time."""
        while self.clock + 1 <= now:
            self.clock += 1
            self._tick()

    def _tick(self) -> None:
        now = self.clock
        self._heartbeats(now)
        for schedule in self.schedules:
            if schedule.enabled and now >= schedule.next_run_at:
                schedule.next_run_at += schedule.every
                schedule.last_run_at = now
                self._queue(schedule.process_id, schedule.id, now)
        done = [r for r in self.running.values() if now - (r.started_at or 0) >= r.planned]
        for run in done:
            self._finish(run, now)
        for pool, queue in self.queues.items():
            self._dispatch(pool, queue, now)
        if int(now) % 60 == 0:
            self._forget(now - HISTORY)

    def _heartbeats(self, now: float) -> None:
        for agent in self.agents:
            if agent.status == "disabled":
                continue
            if self.offline_pool == agent.pool:
                agent.status = "offline"
                continue
            if agent.down_until > now:
                continue
            if self.rng.random() < 0.0005:  # now and then an agent goes quiet for a while
                agent.down_until = now + self.rng.randint(60, 600)
                agent.status = "offline"
                continue
            if agent.status == "offline":
                agent.status = "online"
            if agent.last_heartbeat_at is None or now - agent.last_heartbeat_at >= HEARTBEAT_EVERY:
                agent.last_heartbeat_at = now

    def _queue(self, process_id: str, schedule_id: str | None, now: float) -> None:
        process = self._process(process_id)
        if not process.enabled:
            return
        self._seq += 1
        outcome = self.rng.choices([o for o, _ in OUTCOMES], [w for _, w in OUTCOMES])[0]
        planned = self.rng.randint(5, 180) if outcome != "timed_out" else process.max_seconds
        run = Run(f"{self.tenant}-r{self._seq}", process_id, schedule_id, now, planned, outcome)
        self.runs[run.id] = self.queues.setdefault(process.pool, {})[run.id] = run
        self._touch(run, now)

    def _process(self, process_id: str) -> Process:
        return next(p for p in self.processes if p.id == process_id)

    def _dispatch(self, pool: str, queue: dict[str, Run], now: float) -> None:
        """Cancel the pool's runs queued too long, then start the oldest on free agents."""
        while queue:
            run = next(iter(queue.values()))
            if now - run.queued_at < QUEUE_TIMEOUT:
                break
            # Without this a pool short of agents queues runs without end.
            run.outcome = "cancelled"
            self._finish(run, now)
        while queue and (agent := self._free_agent(pool)) is not None:
            run = queue.pop(next(iter(queue)))
            agent.status = "busy"
            run.status, run.agent_id, run.started_at = "running", agent.id, now
            self.running[run.id] = run
            self._touch(run, now)

    def _free_agent(self, pool: str) -> Agent | None:
        return next((a for a in self.agents if a.pool == pool and a.status == "online"), None)

    def _finish(self, run: Run, now: float) -> None:
        if run.status == "queued":
            del self.queues[self._process(run.process_id).pool][run.id]
        else:
            del self.running[run.id]
        run.status, run.finished_at = run.outcome, now
        agent = next((a for a in self.agents if a.id == run.agent_id), None)
        if agent is not None and agent.status == "busy":
            agent.status = "online"
        if run.schedule_id is not None:
            schedule = next(s for s in self.schedules if s.id == run.schedule_id)
            schedule.last_run_status = run.outcome
        self.finished[(run.process_id, run.outcome)] += 1
        self._touch(run, now)

    def _touch(self, run: Run, now: float) -> None:
        run.updated_at = now
        self._seq += 1
        self._log.append((now, self._seq, run.id))

    def _forget(self, before: float) -> None:
        cut = bisect.bisect_left(self._log, (before,))
        for _, _, run_id in self._log[:cut]:
            run = self.runs.get(run_id)
            if run is not None and run.status in FINAL and run.updated_at < before:
                del self.runs[run_id]
        del self._log[:cut]
        self._log_offset += cut

    def runs_since(self, since: float, position: int, limit: int) -> tuple[list[Run], int | None]:
        """Runs updated at or after `since`, in update order, from log `position` on."""
        start = max(position - self._log_offset, bisect.bisect_left(self._log, (since,)))
        found: list[Run] = []
        index = start
        while index < len(self._log) and len(found) < limit:
            updated, _, run_id = self._log[index]
            index += 1
            run = self.runs.get(run_id)
            # An older entry of a run updated again since is not its latest state.
            if run is not None and run.updated_at == updated:
                found.append(run)
        # Like the real platform, a last page may come back empty.
        return found, (index + self._log_offset if index < len(self._log) else None)


def build_world(tenant: str, seed: int, start: float, warm_up: float = WARM_UP) -> World:
    """A new tenant world with pools, agents, processes and schedules, run for `warm_up` s."""
    rng = random.Random(f"{seed}/{tenant}")
    world = World(tenant, rng, clock=float(int(start) - int(warm_up)))
    pools = [f"pool-{name}" for name in ("general", "gpu", "batch")[: rng.randint(2, 3)]]
    for i in range(rng.randint(4, 9)):
        pool = pools[i % len(pools)]
        world.agents.append(Agent(f"a{i}", f"agent-{i:02d}", pool, f"2.{rng.randint(0, 4)}.0"))
    for i in range(rng.randint(3, 6)):
        pool = pools[i % len(pools)]
        world.processes.append(Process(f"p{i}", f"process-{i:02d}", pool, enabled=i != 5))
        every = rng.choice((30, 60, 90, 120))
        world.schedules.append(
            Schedule(
                f"s{i}",
                f"every-{every}s-{i}",
                f"p{i}",
                every,
                enabled=i != 4,
                next_run_at=world.clock + rng.randint(0, every),
            )
        )
    world.advance(start)
    return world
