"""`render prometheus`: N shards, the rules, per-tenant remote write; checked by promtool."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parent.parent
RULES = ROOT / "alerts" / "cockpit.rules.yml"
CONFIG = """
alerting: {operators: [{webhook: {url: "http://sink.example/ops"}}], scrape_job: cockpit-prod}
tenants:
  - {id: acme}
  - {id: glo-bex}
"""


def render(tmp_path: Path, *flags: str, config: str = CONFIG) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "exporter", "render", "prometheus", "--config",
         str(tmp_path / "config.yaml"), "--rules", str(RULES), *flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def checked(tmp_path: Path, *flags: str, agent: bool = False) -> dict:
    """The rendered document, after promtool accepted it.

    Debian builds Prometheus without Kubernetes discovery, so its promtool rejects a
    kubernetes_sd_configs block: promtool checks the rest with that block swapped for a
    static target (relabelling included), and the test checks the block itself against the
    fields Prometheus documents for it.
    """
    result = render(tmp_path, *flags)
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    local = yaml.safe_load(result.stdout)
    for job in local["scrape_configs"]:
        for sd in job.pop("kubernetes_sd_configs", []):
            assert set(sd) <= {"role", "namespaces", "selectors", "api_server"}, sd
            assert sd["role"] in {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}
            job["static_configs"] = [{"targets": ["pod.example:9610"]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(local))
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    check = subprocess.run(
        [promtool, "check", "config", *(["--agent"] if agent else []), str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return document


def test_static_targets_one_per_shard_with_the_rules(tmp_path: Path) -> None:
    """Each shard a target labelled with its shard; the job is alerting.scrape_job (what
    CockpitExporterDown watches); rules and Alertmanager are wired."""
    document = checked(tmp_path, "--shards", "3", "--alertmanager", "alertmanager:9093")
    (job,) = document["scrape_configs"]
    assert job["job_name"] == "cockpit-prod"
    assert [(c["targets"], c["labels"]) for c in job["static_configs"]] == [
        ([f"cockpit-exporter-{i}.cockpit-exporter:9610"], {"shard": str(i)}) for i in range(3)
    ]
    assert document["rule_files"] == [str(RULES)]
    targets = document["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"] and "remote_write" not in document


def test_kubernetes_pod_discovery_labels_shard_and_replica(tmp_path: Path) -> None:
    """Pods of the app with a `metrics` port, in one namespace; the ordinal at the end of
    the pod name is the shard, the pod name the replica label the rules aggregate away."""
    document = checked(tmp_path, "--shards", "4", "--kubernetes-namespace", "cockpit")
    (job,) = document["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["cockpit"]}}]
    relabel = {r.get("target_label", r.get("action", "")): r for r in job["relabel_configs"]}
    assert relabel["shard"]["regex"] == ".*-([0-9]+)"
    assert relabel["replica"]["source_labels"] == ["__meta_kubernetes_pod_name"]
    kept = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {r["regex"] for r in kept} == {"cockpit-exporter", "metrics"}


def test_each_tenant_writes_to_its_own_backend_tenant(tmp_path: Path) -> None:
    """--tenant-header: a block per tenant with that header and a keep of exactly that
    tenant; the operators' block takes everything else (no tenant, or a tenant not yet in
    the config) and never a listed tenant's series."""
    document = checked(
        tmp_path, "--shards", "2", "--remote-write", "http://mimir:8080/api/v1/push",
        "--tenant-header", "X-Scope-OrgID",
    )  # fmt: skip
    blocks = {b["name"]: b for b in document["remote_write"]}
    assert list(blocks) == ["tenant-acme", "tenant-glo-bex", "operators"]
    assert blocks["tenant-acme"]["headers"] == {"X-Scope-OrgID": "acme"}
    assert blocks["tenant-glo-bex"]["write_relabel_configs"] == [
        {"source_labels": ["tenant"], "regex": "glo-bex", "action": "keep"}
    ]
    assert blocks["operators"]["headers"] == {"X-Scope-OrgID": "cockpit-operators"}
    assert blocks["operators"]["write_relabel_configs"] == [
        {"source_labels": ["tenant"], "regex": "acme|glo-bex", "action": "drop"}
    ]


def test_tenant_in_the_url_and_agent_mode(tmp_path: Path) -> None:
    """{tenant} in the URL (VictoriaMetrics' /insert/{tenant}/...) without a header; agent
    mode leaves out rules and alerting, as Prometheus' agent mode requires."""
    document = checked(
        tmp_path, "--agent", "--remote-write", "http://vm:8480/insert/{tenant}/prometheus",
        agent=True,
    )  # fmt: skip
    urls = {b["name"]: b["url"] for b in document["remote_write"]}
    assert urls["tenant-acme"] == "http://vm:8480/insert/acme/prometheus"
    assert urls["operators"] == "http://vm:8480/insert/cockpit-operators/prometheus"
    assert "rule_files" not in document and "alerting" not in document
    assert all("headers" not in b for b in document["remote_write"])


@pytest.mark.parametrize(
    ("flags", "config", "message"),
    [
        (("--shards", "0"), CONFIG, "--shards 0: at least 1"),
        (("--shards", "3", "--targets", "a:1,b:1"), CONFIG, "2 given for 3 shards"),
        (("--tenant-header", "X Scope"), CONFIG, "a header name"),
        (("--tenant-header", "X-Scope-OrgID"), CONFIG, "needs --remote-write"),
        (("--remote-write", "http://m/push", "--tenant-header", "X-Scope-OrgID"),
         CONFIG + "  - {id: cockpit-operators}\n", "is also a tenant's id"),
        (("--shards", "2"), "tenants: [{id: 'a b'}]\n", "tenants[0].id"),
    ],
)  # fmt: skip
def test_bad_flags_are_named(
    tmp_path: Path, flags: tuple[str, ...], config: str, message: str
) -> None:
    """Each mistake exits non-zero with what is wrong, and no traceback."""
    result = render(tmp_path, *flags, config=config)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
