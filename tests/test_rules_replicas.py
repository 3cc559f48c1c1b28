"""The rules with two replicas of one shard: every tenant alert's promtool case again, each
series reported twice, still pages once (a file of its own: these are the suite's slowest
promtool runs, and a worker of their own shortens it)."""

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_rules import EXPORTER_WIDE, ROOT, promtool, render_with


def from_replicas(series: str) -> list[str]:
    """One input series as two replicas of one shard report it: the same values, told apart
    by the external `replica` label and their scrape target."""
    name, brace, rest = series.partition("{")
    copies = []
    for replica in ("a", "b"):
        labels = f'replica="{replica}"'
        if 'instance="' not in rest:
            labels += f',instance="exporter-{replica}:9610"'
        copies.append(f"{name}{{{labels}" + ("," + rest if brace else "}"))
    return copies


def run_as_replicas(tmp_path: Path, cases: Path, alerting: str) -> subprocess.CompletedProcess:
    """The tenant-alert cases of `cases`, each input series reported by two replicas."""
    rendered = render_with(tmp_path, alerting)
    document = yaml.safe_load(cases.read_text())
    kept = []
    for case in document["tests"]:
        if any(t["alertname"] in EXPORTER_WIDE for t in case["alert_rule_test"]):
            continue
        for entry in case["input_series"]:
            assert entry["series"].count("{") <= 1, entry
        case["input_series"] = [
            {**entry, "series": copy}
            for entry in case["input_series"]
            for copy in from_replicas(entry["series"])
        ]
        kept.append(case)
    assert kept
    (rendered / "replicas.test.yml").write_text(yaml.safe_dump({**document, "tests": kept}))
    return promtool("test", "rules", str(rendered / "replicas.test.yml"))


@pytest.mark.parametrize(
    ("cases", "alerting"),
    [
        (ROOT / "alerts" / "cockpit.test.yml", ""),
        (ROOT / "tests" / "promtool" / "process_objectives.test.yml",
         "  process_objectives: {bill.ing: 0.999}\n"),
    ],
    ids=["cockpit", "process-objectives"],
)  # fmt: skip
def test_two_replicas_of_a_shard_page_once(tmp_path: Path, cases: Path, alerting: str) -> None:
    """Every promtool case of a tenant alert again, each input series reported by two
    replicas: exactly the same alerts fire, once each (the expectations are unchanged, and
    promtool fails on an alert it did not expect). Exporter-wide alerts are about each
    target and stay per target."""
    result = run_as_replicas(tmp_path, cases, alerting)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_without_the_replica_labels_aggregated_the_replicas_page_twice(tmp_path: Path) -> None:
    """The check above can fail: with replica_labels naming another label, the same cases
    see each alert twice."""
    result = run_as_replicas(
        tmp_path, ROOT / "alerts" / "cockpit.test.yml", "  replica_labels: [pod]\n"
    )
    assert result.returncode == 1 and "CockpitAgentOffline" in result.stdout + result.stderr
