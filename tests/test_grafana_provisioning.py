"""`render grafana`: per-tenant org provisioning, checked file by file as Grafana reads it."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from exporter.config import ConfigError, parse_config

CONFIG = """
grafana:
  prometheus_url: http://prometheus:9090
  tenant_proxy_url: http://prom-label-proxy:8080
tenants:
  - {id: acme, grafana: {org_id: 2, group: acme-ops, role: Editor}}
  - {id: globex, grafana: {org_id: 3}}
  - {id: initech, grafana: {org_id: 4}}
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("grafana")
    config = directory / "config.yaml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "render", "grafana", "--config", str(config),
         "--out", str(directory / "out")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return directory / "out"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_one_default_datasource_per_org_with_unique_uids(out: Path) -> None:
    """Every org has exactly one default datasource; uids and names are unique per org; no
    datasource is editable."""
    sources = load(out / "provisioning/datasources/cockpit.yaml")["datasources"]
    defaults = Counter(s["orgId"] for s in sources if s["isDefault"])
    assert defaults == {1: 1, 2: 1, 3: 1, 4: 1}
    for key in ("uid", "name"):
        assert len({(s["orgId"], s[key]) for s in sources}) == len(sources)
    assert all(s["editable"] is False for s in sources)


def test_tenant_datasources_go_through_the_proxy_with_the_tenant_in_secure_data(out: Path) -> None:
    """Tenant orgs query the tenant-enforcing proxy; the tenant header value lives only in
    secureJsonData, never in plain jsonData."""
    sources = load(out / "provisioning/datasources/cockpit.yaml")["datasources"]
    for source in sources:
        if source["orgId"] == 1:
            assert source["url"] == "http://prometheus:9090"
            continue
        tenant = source["uid"].removeprefix("cockpit-")
        assert source["url"] == "http://prom-label-proxy:8080"
        assert source["secureJsonData"] == {"httpHeaderValue1": tenant}
        assert tenant not in json.dumps(source["jsonData"])
        assert source["jsonData"]["httpHeaderName1"] == "X-Cockpit-Tenant"


def test_every_org_is_accounted_for(out: Path) -> None:
    """Each org id has a datasource, a read-only dashboard provider, its dashboards and an
    org_mapping entry."""
    orgs = {1, 2, 3, 4}
    sources = {
        s["orgId"] for s in load(out / "provisioning/datasources/cockpit.yaml")["datasources"]
    }
    providers = load(out / "provisioning/dashboards/cockpit.yaml")["providers"]
    assert sources == orgs == {p["orgId"] for p in providers}
    assert all(p["allowUiUpdates"] is False for p in providers)
    mapping = (out / "grafana.ini.d/cockpit-org-mapping.ini").read_text()
    entries = mapping.split("org_mapping = ", 1)[1].split()
    assert {int(e.split(":")[1]) for e in entries} == orgs
    assert "acme-ops:2:Editor" in entries and "cockpit-globex:3:Viewer" in entries
    for org in orgs:
        assert len(list((out / "dashboards" / f"org-{org}").glob("*.json"))) == 4


def test_tenant_dashboards_are_fixed_to_their_tenant(out: Path) -> None:
    """In a tenant org the tenant variable is a hidden constant; operators keep the choice."""
    for path in (out / "dashboards/org-2").glob("*.json"):
        variables = {v["name"]: v for v in json.loads(path.read_text())["templating"]["list"]}
        assert variables["tenant"] == {
            "name": "tenant", "type": "constant", "query": "acme", "hide": 2,
            "current": {"text": "acme", "value": "acme"},
        }  # fmt: skip
    operators = json.loads((out / "dashboards/org-1/cockpit-agents.json").read_text())
    tenant = next(v for v in operators["templating"]["list"] if v["name"] == "tenant")
    assert tenant["type"] == "query"


def test_org_ids_must_be_unique_and_complete() -> None:
    """Two tenants in one org, or rendering with a tenant without an org, are errors."""
    with pytest.raises(ConfigError, match="org 2 is already tenants"):
        parse_config(CONFIG.replace("org_id: 3", "org_id: 2"), "x")
    from exporter.render.grafana import datasources

    config = parse_config(CONFIG + "  - {id: hooli}\n", "x")
    with pytest.raises(ConfigError, match=r"tenant 'hooli': set grafana\.org_id"):
        datasources(config)
