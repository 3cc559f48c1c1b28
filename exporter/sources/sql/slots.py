"""A counting semaphore for `async with` whose free slot costs one comparison."""

import asyncio
import contextlib
from collections import deque


class Slots:
    """At most `value` holders at once; the others wait in arrival order.

    asyncio.Semaphore scans its waiters with a generator on every acquire, free slot or
    not: a few percent of a SQL run's CPU at thousands of runs (docs/performance.md). Here
    a release hands its slot straight to the longest waiter, so a free slot means nobody
    waits and taking it is one comparison.
    """

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError("a Slots needs at least one slot")
        self._free = value
        # Oldest first. A cancelled one stays until its task resumes to take it out.
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        if self._free:
            self._free -= 1
            return
        await self._wait()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    def locked(self) -> bool:
        """Whether a new holder would have to wait."""
        return not self._free

    async def _wait(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():  # it never got a slot
                with contextlib.suppress(ValueError):  # a release skipped it already
                    self._waiters.remove(waiter)
            else:
                self.release()  # handed a slot as it was cancelled: pass it on
            raise

    def release(self) -> None:
        """Give the slot to the longest waiter, or free it if nobody waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
