"""Timeouts for many futures at once: one loop timer per tick of deadlines, not one per future.

A loop timer per pipelined statement cost every run a heap push and a later pop, each
comparing timer handles in Python (docs/performance.md). Runs a slot starts together share a
deadline tick, so one timer serves a whole batch; a deadline fires at most one tick late,
never early.
"""

import asyncio
import math
from typing import Any

TICK = 0.01  # seconds


class Deadlines:
    """Fails each registered future with TimeoutError once its deadline has passed."""

    def __init__(self) -> None:
        # Tick -> the futures due then (a dict: insertion order, O(1) removal).
        self._due: dict[int, dict[asyncio.Future[Any], None]] = {}

    def add(self, future: asyncio.Future[Any], seconds: float) -> int:
        """Time `future` out in `seconds`; the tick it is due at, for `discard`."""
        loop = future.get_loop()  # not get_running_loop(): that asks the kernel for the pid
        tick = math.ceil((loop.time() + seconds) / TICK)
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = {}
            loop.call_at(tick * TICK, self._expire, tick)
        due[future] = None
        return tick

    def discard(self, tick: int, future: asyncio.Future[Any]) -> None:
        """Forget `future` (settled): its result is not kept alive until the tick."""
        due = self._due.get(tick)
        if due is not None:
            due.pop(future, None)

    def pending(self) -> int:
        """How many futures wait for a deadline."""
        return sum(len(due) for due in self._due.values())

    def _expire(self, tick: int) -> None:
        for future in self._due.pop(tick, {}):
            if not future.done():
                future.set_exception(TimeoutError())
