"""bcrypt checks on one thread, in an order a flood of guesses cannot monopolise.

Checks wait in a priority queue. A check from an address with fewer recent failures (and
checks in flight) goes first; among equals the newest goes first, so a login that arrives
while thousands of guesses wait is answered after the check in progress, not after the
backlog (the adaptive-LIFO idea of queues under overload). The queue is bounded, and a
check that waited too long is dropped: its client has most likely given up.
"""

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

# One hashing thread, as exporter-toolkit serialises bcrypt: guesses never take the default
# executor that DNS lookups and gzip share, nor more than one core.
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
MAX_WAITING = 1024
MAX_WAIT = 30.0


class BusyError(Exception):
    """The check was not run: too many are waiting, or it waited too long."""


class HashQueue:
    """Runs checks one at a time, the cleanest and newest callers first."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, float, Callable[[], bool], asyncio.Future[bool]]] = []
        self._order = itertools.count()
        self._busy = False

    async def run(self, score: int, check: Callable[[], bool]) -> bool:
        """The result of `check()`, run on the hashing thread in its turn; BusyError if shed.

        `score` is the caller's recent failures plus checks in flight (lower goes first).
        """
        if len(self._heap) >= MAX_WAITING:
            raise BusyError
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # Negated order: among equal scores, the newest first.
        entry = (score, -next(self._order), time.monotonic(), check, future)
        heapq.heappush(self._heap, entry)
        self._next()
        return await future

    def _next(self) -> None:
        while not self._busy and self._heap:
            _, _, queued, check, future = heapq.heappop(self._heap)
            if future.done():  # the caller went away
                continue
            if time.monotonic() - queued > MAX_WAIT:
                future.set_exception(BusyError())
                continue
            self._busy = True
            work = asyncio.get_running_loop().run_in_executor(_POOL, check)
            work.add_done_callback(partial(self._finished, future))

    def _finished(self, future: asyncio.Future[bool], work: asyncio.Future[bool]) -> None:
        self._busy = False
        if not future.done():
            error = work.exception()
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(work.result())
        self._next()
