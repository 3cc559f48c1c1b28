"""Alerting and recording rules: current, valid, tested by promtool, documented, and only
referring to metrics the exporter exports."""

import re
import shutil
import subprocess
from pathlib import Path

import promql_parser
import pytest
import yaml

from exporter.reference import exported_series_names
from exporter.render.rules import render_rules
from exporter.render.yamlout import dump
from tests.helpers import selectors

ROOT = Path(__file__).parent.parent
RULES = ROOT / "alerts" / "cockpit.rules.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: `make test` installs Debian's prometheus package"
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, timeout=120, cwd=ROOT
    )


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_committed_rules_are_the_rendered_ones() -> None:
    """alerts/cockpit.rules.yml is exactly what `make rules` writes."""
    assert RULES.read_text() == dump(render_rules()), "run `make rules`"


def test_promtool_checks_and_unit_tests_pass() -> None:
    """`promtool check rules` and the fire / must-not-fire cases of every alert."""
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    test = promtool("test", "rules", "alerts/cockpit.test.yml")
    assert test.returncode == 0, test.stdout + test.stderr


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    """The promtool test file covers each alert both ways."""
    cases = yaml.safe_load((ROOT / "alerts" / "cockpit.test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    for alert in (r["alert"] for r in rules() if "alert" in r):
        outcomes = {bool(c["exp_alerts"]) for c in checks if c["alertname"] == alert}
        if alert == "CockpitRunFailureBudgetBurn":
            outcomes.add(False)  # the slow case asserts the fast alert stays quiet
        assert outcomes == {True, False}, alert


def test_alerts_carry_severity_summary_description_and_a_real_runbook_section() -> None:
    """Static summary, templated description naming the tenant, runbook anchor that exists."""
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "runbooks.md").read_text(), re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    for rule in (r for r in rules() if "alert" in r):
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert "{{" not in annotations["summary"] and annotations["summary"].endswith(".")
        # The alerts about the exporter itself, for its operators, name no tenant.
        if rule["alert"] not in ("CockpitExporterDown", "CockpitTenantDiscoveryFailing"):
            assert "$labels.tenant" in annotations["description"], rule["alert"]
        anchor = annotations["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no runbook section #{anchor}"


def test_rules_refer_only_to_exported_metrics() -> None:
    """Every selector parses and names a metric the exporter exports (or a recording rule)."""
    known = exported_series_names() | {"up"} | {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        used = selectors(promql_parser.parse(rule["expr"]))
        assert used and used <= known, (rule.get("alert") or rule.get("record"), used - known)


@pytest.mark.parametrize("bad", ["cockpit_no_such_metric", "cockpit_agent_upp"])
def test_the_reference_check_catches_unknown_names(bad: str) -> None:
    """The metric check is not vacuous: a misspelt name is caught."""
    assert bad not in exported_series_names()
    assert selectors(promql_parser.parse(f"rate({bad}[5m]) > 0")) == {bad}
