"""The SQL source's own semaphore and statement deadlines, and packets made once per statement:
what they replaced asyncio's Semaphore and per-statement timers for must still hold."""

import asyncio
import random

from exporter.sources.sql.deadlines import TICK, Deadlines
from exporter.sources.sql.slots import Slots
from tests.conftest import ScratchDatabase, key, parse_samples


async def test_slots_never_admit_more_than_their_count_under_random_cancellation() -> None:
    """300 holders on 4 slots, a third cancelled at random moments (waiting, just handed a
    slot, or holding one): never more than 4 inside, and afterwards all 4 are free."""
    slots, inside, peak = Slots(4), 0, 0
    rng = random.Random(7)

    async def hold() -> None:
        nonlocal inside, peak
        async with slots:
            inside += 1
            peak = max(peak, inside)
            try:
                await asyncio.sleep(rng.random() / 500)
            finally:
                inside -= 1

    tasks = [asyncio.create_task(hold()) for _ in range(300)]
    for _ in range(100):
        await asyncio.sleep(rng.random() / 1000)
        rng.choice(tasks).cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak == 4
    assert inside == 0
    for _ in range(4):  # every slot came back: four holders get in without waiting
        await asyncio.wait_for(slots.__aenter__(), 0.01)
    assert slots.locked()


async def test_slots_serve_waiters_in_arrival_order_and_pass_on_a_cancelled_grant() -> None:
    """Waiters get the slot in the order they came; one cancelled right after it was handed
    the slot (before it resumed) passes it to the next, so the slot is not lost."""
    slots, order = Slots(1), []
    await slots.__aenter__()

    async def wait(name: str) -> None:
        async with slots:
            order.append(name)

    first, second, third = (asyncio.create_task(wait(n)) for n in ("first", "second", "third"))
    await asyncio.sleep(0)  # all three wait now
    slots.release()  # handed to `first`, which has not resumed yet
    first.cancel()
    await asyncio.gather(first, second, third, return_exceptions=True)
    assert first.cancelled()
    assert order == ["second", "third"]
    assert not slots.locked()


async def test_a_deadline_fails_its_future_never_early_and_forgets_settled_ones() -> None:
    """A future registered for 50 ms fails with TimeoutError no earlier than that and at most
    a tick late; a settled one that was discarded is neither failed nor kept."""
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    late, settled = loop.create_future(), loop.create_future()
    started = loop.time()
    deadlines.add(late, 0.05)
    tick = deadlines.add(settled, 0.05)
    settled.set_result("rows")
    deadlines.discard(tick, settled)
    assert deadlines.pending() == 1
    try:
        await late
    except TimeoutError:
        waited = loop.time() - started
    assert 0.05 <= waited < 0.05 + TICK + 0.05  # the loop's own lateness on a busy machine
    assert settled.result() == "rows"
    assert deadlines.pending() == 0


async def test_a_literal_percent_in_a_statement_reaches_mariadb_unchanged(
    database: ScratchDatabase, make_exporter
) -> None:
    """Statements without parameters are framed once and reused: `%` in them (doubled in the
    driver's text) still reaches the server as one `%`, run after run, tenant after tenant."""
    database.execute(
        "CREATE TABLE items (code VARCHAR(10))",
        "INSERT INTO items VALUES ('a%b'), ('a%%b'), ('ab')",
    )
    query = (
        "queries:\n  - name: pct\n    sql: SELECT COUNT(*) AS n, MAX(code) AS code FROM items"
        " WHERE code LIKE 'a!%b' ESCAPE '!'\n"
        "    metrics: [{name: pct_items, type: gauge, help: P., labels: [code], value: n}]\n"
    )
    tenants = "".join(f"  - {{id: t{i}, mysql: {{dsn: '{database.dsn}'}}}}\n" for i in range(3))
    exporter = await make_exporter(f"tenants:\n{tenants}{query}")
    for _ in range(2):
        for i in range(3):
            await exporter.run(f"t{i}", "pct")
    samples = parse_samples(await exporter.scrape())
    for i in range(3):
        assert samples[key("pct_items", code="a%b", tenant=f"t{i}")] == 1
