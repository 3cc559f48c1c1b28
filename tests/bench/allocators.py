"""Run the exporter with a probe that writes its allocators' state once a minute.

`python -m tests.bench.allocators OUT [exporter arguments]`; the soak uses it when
SOAK_ALLOCATORS names the file. Each line: minutes since start, RSS, Python's allocator
(arenas and bytes in allocated blocks, from `sys._debugmallocstats`) and glibc's (`mallinfo2`:
heap in use and free, and blocks mapped on their own). It tells objects that grow from an
allocator that fragments, which RSS alone cannot.
"""

import ctypes
import gc
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from exporter.cli import main

MIB = 2**20


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2`."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]  # fmt: skip


def python_allocator() -> tuple[int, int]:
    """Arenas allocated now and bytes in allocated blocks, as Python's allocator reports them."""
    # It prints to the C-level stderr only, so the descriptor is lent to a file for the call.
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    arenas = re.search(r"# arenas allocated current\s*=\s*([\d,]+)", text)
    used = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    if arenas is None or used is None:
        return -1, -1
    return int(arenas.group(1).replace(",", "")), int(used.group(1).replace(",", ""))


def large_containers(objects: list[object], floor: int = MIB, limit: int = 6) -> str:
    """The largest dicts, sets and lists the collector tracks: size, length, a first key.

    A container that doubles its table when it crosses a fill threshold shows as a step in
    RSS with no slope before or after; this names it.
    """
    found = []
    for obj in objects:
        if isinstance(obj, dict | set | list) and (size := sys.getsizeof(obj)) >= floor:
            first = next(iter(obj), None) if len(obj) else None
            found.append((size, type(obj).__name__, len(obj), repr(first)[:40]))
    found.sort(reverse=True)
    return "; ".join(f"{k} {n} {s / MIB:.1f} MiB first {f}" for s, k, n, f in found[:limit])


def probe(out: Path, every: float = 60.0) -> None:
    """Append one line per `every` seconds to `out`, forever."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    began = time.monotonic()
    while True:
        time.sleep(every)
        info = libc.mallinfo2()
        arenas, used = python_allocator()
        status = Path("/proc/self/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
        # Read after RSS: the list of every tracked object is itself tens of megabytes.
        objects = gc.get_objects()
        with out.open("a") as handle:
            handle.write(
                f"{(time.monotonic() - began) / 60:5.1f} min: rss {rss / 1024:6.1f} MiB; "
                f"python arenas {arenas} ({arenas} MiB), in blocks {used / MIB:6.1f} MiB; "
                f"glibc heap in use {info.uordblks / MIB:6.1f} MiB, free {info.fordblks / MIB:5.1f}"
                f" MiB, mapped {info.hblkhd / MIB:5.1f} MiB; gc objects {len(objects)};"
                f" largest: {large_containers(objects)}\n"
            )
        del objects


if __name__ == "__main__":
    threading.Thread(target=probe, args=(Path(sys.argv[1]),), daemon=True).start()
    sys.exit(main(sys.argv[2:]))
