"""Every benchmark module runs end to end at a tiny size (BENCH_TINY=1): none can rot.

No figure is asserted (timings at this size mean nothing); a module that no longer imports,
calls a helper that changed, or fails to start what it measures fails here, not at the next
`make bench`. Each prints its report, peers included where it has one.
"""

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
TIMEOUT = 150.0
MODULES = {
    "scrape": "prometheus_client.generate_latest",
    "hostile": "upstream",
    "databases": "sql_exporter 0.4.5",
    "platform": "CPU per tenant poll",
    "shards": "all shards:",
    "tracing": "ratio traced/off",
    "soak": "rss slope after warm-up",
}


async def run(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env={**os.environ, "BENCH_TINY": "1", "FLEET_CHURN": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with asyncio.timeout(TIMEOUT):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        return -1, f"no end within {TIMEOUT}s"
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


def test_make_bench_runs_every_module() -> None:
    """The smoke run and `make bench` cover the same modules."""
    makefile = (ROOT / "Makefile").read_text()
    benched = {line.split("tests.bench.")[1].strip() for line in makefile.splitlines()
               if "-m tests.bench." in line and "soak" not in line}  # fmt: skip
    modules = {p.stem for p in (ROOT / "tests" / "bench").glob("*.py")} - {"__init__"}
    assert benched | {"soak", "allocators"} == modules == set(MODULES) | {"allocators"}


async def test_every_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    """All at once (each names its own databases and ports): mostly they wait."""
    probe = ("-m", "tests.bench.allocators", str(tmp_path / "probe"), "version")
    runs = [run("-m", f"tests.bench.{module}") for module in MODULES]
    *results, allocators = await asyncio.gather(*runs, run(*probe))
    failed = {
        module: output[-2000:]
        for (module, expected), (code, output) in zip(MODULES.items(), results, strict=True)
        if code != 0 or expected not in output
    }
    assert failed == {}, "\n\n".join(f"{m}:\n{o}" for m, o in failed.items())
    assert allocators[0] == 0 and "cockpit-exporter" in allocators[1], allocators
