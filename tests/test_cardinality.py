"""The series budget per tenant, as docs/metrics.md states it, held by the demo's real output."""

import re
from collections import Counter
from pathlib import Path

from exporter.config import parse_config
from exporter.demo import TENANTS
from tests.helpers import demo_scraped

ROOT = Path(__file__).resolve().parent.parent
TERM = re.compile(r"(\d+)(?: \N{MULTIPLICATION SIGN} (\w+))?")


def documented() -> dict[str, dict[str, int]]:
    """Each formula line of docs/metrics.md's Cardinality block: source -> term -> factor."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    block = text.split("## Cardinality", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    formulas = {}
    for line in block.strip().splitlines():
        name, _, terms = line.partition(" series = ")
        formulas[name] = {
            (what or "fixed"): int(n) for n, what in TERM.findall(terms.split("(")[0])
        }
    return formulas


def budget(formula: dict[str, int], counts: dict[str, int]) -> int:
    return sum(
        factor * (1 if term == "fixed" else counts[term]) for term, factor in formula.items()
    )


async def test_the_demo_stays_within_the_documented_series_per_tenant(
    make_exporter, tmp_path: Path
) -> None:
    """Every demo tenant's series, counted by source, are at most what the documented formula
    allows for its pools, agents, processes and schedules (configured series apart)."""
    text, exporter, samples = await demo_scraped(make_exporter, tmp_path)
    config = parse_config(text, "demo")
    configured = {m.name for q in config.queries for m in q.metrics} | {
        "cockpit_demo_agents_by_version"
    }
    formulas = documented()
    assert set(formulas) == {"platform", "sql", "http_json", "state"}
    jobs = exporter.exporter.runner.jobs()
    for tenant in TENANTS:
        mine = [(n, dict(labels)) for n, labels in samples if dict(labels).get("tenant") == tenant]
        by_source = Counter(_source(name, labels, configured) for name, labels in mine)
        agents = [labels for name, labels in mine if name == "cockpit_agent_info"]
        kinds = {j.kind for j in jobs if j.tenant == tenant}
        counts = {
            "pools": len({a["pool"] for a in agents}),
            "agents": len(agents),
            "processes": sum(1 for name, _ in mine if name == "cockpit_process_info"),
            "schedules": sum(1 for name, _ in mine if name == "cockpit_schedule_info"),
            "queries": sum(1 for j in jobs if j.tenant == tenant and j.kind == "sql"),
            "entries": sum(1 for j in jobs if j.tenant == tenant and j.kind == "http_json"),
            "kinds": len(kinds),
        }
        assert counts["agents"] and counts["processes"] and counts["schedules"], counts
        for source in ("platform", "sql", "http_json"):
            if source in kinds:
                assert by_source[source] <= budget(formulas[source], counts), (tenant, source)
        assert by_source["state"] <= budget(formulas["state"], counts), tenant
        # A budget, not a guess: only series that may be absent are missing (failing since,
        # per endpoint; heartbeat, per agent; oldest queued, per process; next and last run
        # and last success, per schedule).
        optional = 4 + counts["agents"] + counts["processes"] + 3 * counts["schedules"]
        assert by_source["platform"] >= budget(formulas["platform"], counts) - optional, tenant
        assert set(by_source) <= {"platform", "sql", "http_json", "state", "configured"}


def _source(name: str, labels: dict[str, str], configured: set[str]) -> str:
    if name in configured:
        return "configured"
    if name == "cockpit_exporter_state_errors_total":
        return "state"
    if "source" in labels:
        return labels["source"]
    return "platform"  # the platform's data and client families carry no source label
