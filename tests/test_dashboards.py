"""Dashboards without Grafana: committed JSON is current, the dashboard-linter rules hold,
every expression parses and names exported metrics, and every query returns data from a real
Prometheus scraping the real exporter."""

import asyncio
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import promql_parser
import pytest

from exporter.alertrules import RuleSettings, Thresholds
from exporter.grafana.build import build, render_all
from exporter.grafana.model import Board
from exporter.grafana.panels import BOARDS
from exporter.reference import exported_series_names
from exporter.render.rules import recording_rules, render_rules
from exporter.render.yamlout import dump
from tests import platform_helpers
from tests.conftest import ScratchDatabase, free_port
from tests.helpers import exporter_config, selectors, start_prometheus

ROOT = Path(__file__).parent.parent
COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
RATE_FUNCTIONS = {"rate", "irate", "increase"}


def dashboards() -> list[dict[str, Any]]:
    return [build(board) for board in BOARDS]


def panels() -> Iterator[tuple[str, dict[str, Any]]]:
    for dashboard in dashboards():
        for panel in dashboard["panels"]:
            yield dashboard["uid"], panel


def substituted(expr: str, rate_interval: str = "1m", tenant: str = "t0001") -> str:
    # Pool and process as their "All" value (`.+`), the tenant as one of the demo's.
    expr = expr.replace("$pool", ".+").replace("$process", ".+")
    return expr.replace("$__rate_interval", rate_interval).replace("$tenant", tenant)


def test_committed_json_is_the_generated_json() -> None:
    """grafana/dashboards/ holds exactly what `make dashboards` writes."""
    committed = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert committed == render_all(), "run `make dashboards`"


def test_template_variables_and_links() -> None:
    """A `datasource` variable (no hard-coded uid), a `tenant` variable read through it, and
    links to the other cockpit dashboards, on every dashboard."""
    for dashboard in dashboards():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        assert variables["tenant"]["datasource"]["uid"] == "${datasource}"
        tenant = variables["tenant"]
        assert tenant["multi"] and tenant["includeAll"] and tenant["allValue"] == ".+"
        assert any(link["type"] == "dashboards" and "cockpit" in link["tags"]
                   for link in dashboard["links"])  # fmt: skip
        assert "cockpit" in dashboard["tags"]


def test_panels_follow_the_linter_rules() -> None:
    """Panel and target datasource is the variable; unit, title and description are set;
    every panel has targets with expressions."""
    for uid, panel in panels():
        where = f"{uid}/{panel['title']}"
        assert panel["datasource"]["uid"] == "${datasource}", where
        assert panel["fieldConfig"]["defaults"].get("unit"), where
        assert panel["title"] and panel["description"], where
        assert panel["targets"], where
        for target in panel["targets"]:
            assert target["expr"].strip(), where
            assert target["datasource"]["uid"] == "${datasource}", where
            assert target["refId"], where


def test_every_panel_sets_its_thresholds_and_tables_are_instant_table_queries() -> None:
    """No panel falls back to Grafana's default thresholds (red from 80, which turned "Agents
    up" red on a healthy fleet); the steps start at -infinity and rise; the stats the alerts
    judge turn red where the alert fires; tables ask for one instant row per series."""
    alert = Thresholds()
    steps = {}
    for uid, panel in panels():
        thresholds = panel["fieldConfig"]["defaults"]["thresholds"]
        values = [step["value"] for step in thresholds["steps"]]
        assert thresholds["mode"] == "absolute" and values[0] is None, (uid, panel["title"])
        assert values[1:] == sorted(values[1:]) and 80 not in values, (uid, panel["title"])
        steps[panel["title"]] = thresholds["steps"]
        if panel["type"] == "table":
            assert all(t["instant"] and t["format"] == "table" for t in panel["targets"])
    assert steps["Oldest queued run"][1] == {"value": alert.queued_too_long, "color": "red"}
    assert steps["Agents up"] == [{"value": None, "color": "red"}, {"value": 1, "color": "green"}]
    late = next(p for _, p in panels() if p["title"] == "Late schedules")
    assert f"> {alert.schedule_late_after:g})" in late["targets"][0]["expr"]


@pytest.mark.parametrize("board", BOARDS, ids=[b.uid for b in BOARDS])
def test_panels_fit_the_grid_without_overlapping(board: Board) -> None:
    """Every panel within Grafana's 24 columns, no two sharing a cell, stats first in a row
    of their own size: compact, not one 12-wide block per number."""
    cells: set[tuple[int, int]] = set()
    for panel in build(board)["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, (board.uid, panel["title"], pos)
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}  # fmt: skip
        assert not mine & cells, (board.uid, panel["title"], pos)
        cells |= mine
        if panel["type"] == "stat":
            assert pos["w"] <= 6 and pos["h"] <= 4, (board.uid, panel["title"])


def counters_outside_rate(node: object, inside: bool = False) -> list[str]:
    """Counter selectors not wrapped in rate/irate/increase."""
    found: list[str] = []
    if isinstance(node, promql_parser.VectorSelector):
        if node.name.endswith(COUNTER_SUFFIXES) and not inside:
            found.append(node.name)
        return found
    if isinstance(node, promql_parser.Call):
        inside = inside or node.func.name in RATE_FUNCTIONS
    for attribute in ("lhs", "rhs", "expr", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            found += counters_outside_rate(child, inside)
    for child in getattr(node, "args", None) or ():
        found += counters_outside_rate(child, inside)
    return found


def test_expressions_parse_use_rate_interval_and_exported_metrics() -> None:
    """Every expression parses; range functions use $__rate_interval; counters appear only
    inside rate or increase; every metric is one the exporter exports (checked against the
    exporter's own family definitions)."""
    known = exported_series_names() | {"ALERTS"}
    known |= {rule["record"] for rule in recording_rules(RuleSettings())}
    for uid, panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for window in re.findall(r"\b(?:rate|irate|increase)\([^\[]*\[([^\]]+)\]", expr):
                # The error budget is the objective's 30 days, whatever the time picker says.
                allowed = ("$__rate_interval", "30d") if "Error budget" in panel["title"] else ()
                assert window in allowed or window == "$__rate_interval", (uid, expr)
            parsed = promql_parser.parse(substituted(expr))
            assert selectors(parsed) <= known, (uid, selectors(parsed) - known)
            assert counters_outside_rate(parsed) == [], (uid, expr)


def test_the_lint_checks_can_fail() -> None:
    """The counter check catches a bare counter; the metric check an unknown name."""
    assert counters_outside_rate(promql_parser.parse("cockpit_runs_finished_total > 0"))
    parsed = promql_parser.parse("cockpit_nope + on(tenant) cockpit_agent_up")
    assert selectors(parsed) - exported_series_names() == {"cockpit_nope"}


async def prometheus_query(session: aiohttp.ClientSession, port: int, expr: str) -> list[Any]:
    async with session.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}) as r:
        body = await r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_every_panel_query_returns_data_from_real_prometheus(
    make_exporter, database: ScratchDatabase, tmp_path: Path
) -> None:
    """A real Prometheus scrapes the exporter fed by the simulator and MariaDB; every query,
    for one tenant, returns data unless the panel says in code why it may be empty."""
    assert shutil.which("prometheus")
    database.execute("INSERT INTO work_items VALUES (1,'q','new',1)")
    sim = await platform_helpers.start(2)
    process = None
    try:
        text = exporter_config(sim, tmp_path, "http://127.0.0.1:9", database.dsn)
        exporter = await make_exporter(text, schedule=True)
        port, target = free_port(), f"127.0.0.1:{exporter.exporter.port}"
        # The rules too: the SLO panels read recording rules, the alert panels ALERTS.
        (tmp_path / "rules.yml").write_text(dump(render_rules()))
        process = await start_prometheus(
            tmp_path, target, port, rule_files=[str(tmp_path / "rules.yml")]
        )
        await asyncio.sleep(8)  # a few scrapes, so that rates have two samples
        empty: list[str] = []
        async with aiohttp.ClientSession() as session:
            for board in BOARDS:
                for panel in board.panels:
                    for query in panel.queries:
                        result = await prometheus_query(
                            session, port, substituted(query.expr, rate_interval="10s")
                        )
                        if not result and not query.may_be_empty:
                            empty.append(f"{board.uid}/{panel.title}: {query.expr}")
    finally:
        if process is not None:
            process.terminate()
            await process.wait()
        await sim.runner.cleanup()
    assert empty == [], json.dumps(empty, indent=1)


def test_panels_marked_may_be_empty_say_why() -> None:
    """A query allowed to return nothing carries its reason in code."""
    marked = [q for b in BOARDS for p in b.panels for q in p.queries if q.may_be_empty]
    assert marked and all(len(q.may_be_empty.split()) >= 3 for q in marked)


@pytest.mark.parametrize("board", BOARDS, ids=[b.uid for b in BOARDS])
def test_dashboard_json_is_valid_and_has_unique_panel_titles(board: Board) -> None:
    """Each dashboard is JSON with a stable uid and distinct panel titles."""
    document = build(board)
    assert document["uid"] == board.uid and document["title"] == board.title
    titles = [p["title"] for p in document["panels"]]
    assert len(titles) == len(set(titles))
