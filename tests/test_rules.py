"""Alerting and recording rules: current, valid, tested by promtool, documented, and only
referring to metrics the exporter exports."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import promql_parser
import pytest
import yaml

from exporter.reference import exported_series_names
from exporter.render.rules import render_rules
from exporter.render.yamlout import dump
from tests.helpers import selectors

ROOT = Path(__file__).parent.parent
RULES = ROOT / "alerts" / "cockpit.rules.yml"


# Alerts about the exporter as a whole: no tenant to name.
EXPORTER_WIDE = (
    "CockpitExporterDown", "CockpitExporterAbsent", "CockpitConfigReloadFailed",
    "CockpitTenantDiscoveryFailing", "CockpitScrapeTokenExpiring", "CockpitAuditWriteFailing",
)  # fmt: skip


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
        assert outcomes == {True, False}, alert


def test_alerts_carry_severity_summary_description_and_a_real_runbook_section() -> None:
    """Static summary, templated description naming the tenant, runbook anchor that exists."""
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "runbooks.md").read_text(), re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
    for rule in (r for r in rules() if "alert" in r):
        annotations = rule["annotations"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["labels"]["owner"] in ("operator", "tenant"), rule["alert"]
        assert "{{" not in annotations["summary"] and annotations["summary"].endswith(".")
        # The alerts about the exporter itself, for its operators, name no tenant.
        if rule["alert"] not in EXPORTER_WIDE:
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


def render_rules_cli(tmp_path: Path, alerting: str | None, *flags: str) -> CompletedProcess[str]:
    """`cockpit-exporter render rules`, with a config holding this alerting section (none:
    no --config) and `flags`."""
    args = list(flags)
    if alerting is not None:
        config = tmp_path / "config.yaml"
        config.write_text(
            f"alerting:\n  operators: [{{webhook: {{url: 'http://127.0.0.1:9/'}}}}]\n{alerting}"
            "tenants: [{id: acme}]\n"
        )
        args += ["--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "exporter", "render", "rules", *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def render_with(tmp_path: Path, alerting: str) -> Path:
    """`render rules --config` with this alerting section, written next to a copy of the
    promtool test file."""
    result = render_rules_cli(tmp_path, alerting)
    assert result.returncode == 0, result.stderr
    (tmp_path / "cockpit.rules.yml").write_text(result.stdout)
    shutil.copy(ROOT / "alerts" / "cockpit.test.yml", tmp_path / "cockpit.test.yml")
    return tmp_path


def test_the_minimum_runs_guard_keeps_low_volume_failures_quiet(tmp_path: Path) -> None:
    """With the guard at 1 run, the committed low-volume cases (one failed daily run, eight
    failures and nothing else) page: the guard, not the windows, keeps them quiet."""
    rendered = render_with(tmp_path, "  thresholds: {min_runs: 1}\n")
    result = promtool("test", "rules", str(rendered / "cockpit.test.yml"))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'tenant="initech"' in output and 'tenant="umbrella"' in output, output
    assert "time: 59m" in output


def test_rules_are_rendered_from_the_configs_alerting_section(tmp_path: Path) -> None:
    """scrape_job, objective and thresholds come from the config; promtool accepts them."""
    rendered = render_with(
        tmp_path,
        "  scrape_job: cockpit-prod\n  objective: 0.99\n"
        "  thresholds: {stale_intervals: 5, pool_offline_for: 5m, runs_lag: 30m}\n",
    )
    document = yaml.safe_load((rendered / "cockpit.rules.yml").read_text())
    by_name = {r["alert"]: r for g in document["groups"] for r in g["rules"] if "alert" in r}
    assert by_name["CockpitExporterDown"]["expr"] == 'up{job="cockpit-prod"} == 0'
    assert by_name["CockpitExporterAbsent"]["expr"] == 'absent(up{job="cockpit-prod"})'
    assert (
        "> 5 * max without (instance, replica) (cockpit_collection_interval_seconds)"
        in (by_name["CockpitDataStale"]["expr"])
    )
    assert by_name["CockpitAgentPoolOffline"]["for"] == "5m"
    assert by_name["CockpitRunsLagging"]["expr"].endswith("> 1800")
    burns = [r for g in document["groups"] for r in g["rules"]
             if r.get("alert") == "CockpitRunFailureBudgetBurn"]  # fmt: skip
    assert "ratio_rate1h > 0.144" in burns[0]["expr"]  # 14.4 x a 1% budget
    check = promtool("check", "rules", str(rendered / "cockpit.rules.yml"))
    assert check.returncode == 0, check.stdout + check.stderr
    # --runbooks wins over the config's runbooks, and a bad one is named.
    config = str(rendered / "config.yaml")
    result = render_rules_cli(
        tmp_path, None, "--config", config, "--runbooks", "https://wiki.example.com/cockpit"
    )
    assert result.returncode == 0, result.stderr
    assert "runbook_url: https://wiki.example.com/cockpit#exporter-down" in result.stdout
    assert 'up{job="cockpit-prod"}' in result.stdout
    bad = render_rules_cli(tmp_path, None, "--runbooks", "wiki")
    assert bad.returncode != 0 and "--runbooks" in bad.stderr and "Traceback" not in bad.stderr


def test_a_process_with_its_own_objective_pages_on_its_own(tmp_path: Path) -> None:
    """A process objective alerts per process, matched literally (a dot is no wildcard), and
    its runs leave the tenant-wide ratio: 1.5% failures there would not page at 95%."""
    rendered = render_with(tmp_path, "  process_objectives: {bill.ing: 0.999}\n")
    shutil.copy(ROOT / "tests" / "promtool" / "process_objectives.test.yml", rendered)
    result = promtool("test", "rules", str(rendered / "process_objectives.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("alerting", "message"),
    [
        ("  objective: 1.5\n", "alerting.objective"),
        ("  thresholds: {blind_for: soon}\n", "alerting.thresholds.blind_for"),
        ("  scrape_job: 'a\"b'\n", "alerting.scrape_job"),
        ("  thresholds: {min_run: 3}\n", "alerting.thresholds.min_run"),
        ("  thresholds: {blind_memory: 10s}\n", "alerting.thresholds.blind_memory"),
        ("  process_objectives: {billing: 1}\n", "alerting.process_objectives.billing"),
    ],
)
def test_bad_alerting_settings_name_the_key(tmp_path: Path, alerting: str, message: str) -> None:
    result = render_rules_cli(tmp_path, alerting)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
