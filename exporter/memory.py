"""Allocator settings for a long-running process that handles large transient buffers.

glibc's malloc gives each thread that allocates its own arena (up to 8 per core) and raises
its mmap threshold after large blocks are freed, so multi-megabyte bodies compressed in
worker threads end up in arenas that never shrink: RSS creeps up for tens of minutes. Two
arenas and a fixed mmap threshold keep it flat (see docs/reliability.md, the soak).
"""

import asyncio
import ctypes
import ctypes.util
import gc

import structlog

log = structlog.get_logger(__name__)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2
# Blocks from 256 KiB up are mapped and unmapped on their own, so freeing them returns the
# memory; fixing the threshold also stops glibc from raising it.
MMAP_THRESHOLD = 256 * 1024


# Each scrape and poll frees megabytes of glibc heap that the next one touches again at other
# addresses: trimmed once a minute, RSS stood 3.3 MB above the minute's low for most of it;
# every 10 s, 1.4 MB (soak runs 19 and 20). A trim of a heap this size takes a few ms.
TRIM_EVERY = 10.0
# Python's default collects the young generation after 700 more allocations than frees.
# Thousands of runs in flight at once (tasks, futures, replies) reach that mid-burst and die
# right after: at 1,000 SQL tenants 95 young collections a minute, 25 ms of CPU, against one
# of 7 ms at 10,000 (docs/performance.md). Middle ones are then a hundred times rarer, so a
# full one may follow every second of them (Python waits for more than the threshold), and
# still only once a quarter more objects survived than the last one found: about one every 22
# minutes there, against one every 11 at 700/10/100.
GC_THRESHOLDS = (10_000, 10, 1)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name is not None else None
    except OSError:
        return None


async def trim_periodically(every: float = TRIM_EVERY) -> None:
    """Hand freed heap pages back to the system now and then (glibc's malloc_trim).

    Freed memory inside the heap stays counted in RSS until trimmed; without this, RSS
    drifts up in steps with each new peak of allocation even when live memory is flat.
    """
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim, 0)  # ctypes lets go of the GIL: the loop runs meanwhile


def tune_allocator() -> bool:
    """Apply the settings where glibc is the allocator; elsewhere do nothing."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_ARENA_MAX, ARENAS)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("allocator tuned", arenas=ARENAS, mmap_threshold=MMAP_THRESHOLD, applied=done)
    return done


def tune_gc() -> None:
    """Collect the oldest generation ten times less often than Python's default."""
    gc.set_threshold(*GC_THRESHOLDS)
