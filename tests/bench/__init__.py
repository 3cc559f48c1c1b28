"""Benchmarks run by `make bench`.

With BENCH_TINY=1 each one runs end to end at a tiny size in seconds, with names of its own
for anything it creates on the server: tests/test_bench_smoke.py does that in the suite, so
a broken import or a changed helper fails `make test` instead of the next `make bench`.
"""

import os
import uuid
from typing import TypeVar

T = TypeVar("T")
TINY = os.environ.get("BENCH_TINY") == "1"
# Part of the databases and users a tiny run creates: never those of another run.
RUN_ID = uuid.uuid4().hex[:8] if TINY else ""


def sized(full: T, tiny: T) -> T:
    """`tiny` in a smoke run, else `full`."""
    return tiny if TINY else full
