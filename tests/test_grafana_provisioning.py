"""`render grafana`: per-tenant org provisioning, checked file by file as Grafana reads it."""

import configparser
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.config import ConfigError, parse_config

CONFIG = """
grafana:
  prometheus_url: http://prometheus:9090
  tenant_proxy_url: http://prom-label-proxy:8080
  landing_org_id: 5
  traces_datasource_uid: tempo
  oauth:
    client_id: cockpit
    client_secret_file: /run/secrets/grafana-oauth
    auth_url: https://idp.example.com/authorize
    token_url: https://idp.example.com/token
    api_url: https://idp.example.com/userinfo
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
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(out / "grafana.ini")
    entries = ini["auth.generic_oauth"]["org_mapping"].split()
    assert {int(e.split(":")[1]) for e in entries} == orgs
    assert "acme-ops:2:Editor" in entries and "cockpit-globex:3:Viewer" in entries
    for org in orgs:
        boards = {p.stem for p in (out / "dashboards" / f"org-{org}").glob("*.json")}
        # The fleet overview spans tenants: the operators' org only.
        assert len(boards) == (5 if org == 1 else 4) and ("cockpit-fleet" in boards) == (org == 1)


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


def test_exemplars_link_to_the_traces_datasource_in_the_operators_org_only(out: Path) -> None:
    """The operators' datasource sends an exemplar's `trace_id` to the configured Tempo or
    Jaeger datasource (Grafana's `exemplarTraceIdDestinations`); the health dashboard's
    duration panel asks for exemplars; tenant copies leave out that exporter-wide panel."""
    sources = load(out / "provisioning/datasources/cockpit.yaml")["datasources"]
    operators = next(s for s in sources if s["orgId"] == 1)
    assert operators["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo"}
    ]
    assert all("exemplarTraceIdDestinations" not in s.get("jsonData", {}) for s in sources[1:])

    def exemplar_targets(org: int) -> list[dict]:
        board = json.loads((out / f"dashboards/org-{org}/cockpit-exporter-health.json").read_text())
        return [t for p in board["panels"] for t in p["targets"] if t.get("exemplar")]

    (target,) = exemplar_targets(1)
    assert "cockpit_collection_duration_seconds_bucket" in target["expr"]
    assert exemplar_targets(2) == []


def test_org_ids_must_be_unique_and_complete() -> None:
    """Two tenants in one org, or rendering with a tenant without an org, are errors."""
    with pytest.raises(ConfigError, match="org 2 is already tenants"):
        parse_config(CONFIG.replace("org_id: 3", "org_id: 2"), "x")
    from exporter.render.grafana import datasources

    config = parse_config(CONFIG + "  - {id: hooli}\n", "x")
    with pytest.raises(ConfigError, match=r"tenant 'hooli': set grafana\.org_id"):
        datasources(config)


def grafana_ini(out: Path) -> configparser.ConfigParser:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(out / "grafana.ini")
    return ini


def test_grafana_ini_is_safe_by_default(out: Path) -> None:
    """The settings Grafana's docs name for a closed setup: strict roles from org_mapping only
    (no role_attribute_path, which Grafana would merge into every mapped org), unmapped users
    never in org 1, PKCE, secure cookies, no anonymous access, no sign-up, no login form."""
    ini = grafana_ini(out)
    oauth = ini["auth.generic_oauth"]
    assert oauth["role_attribute_strict"] == "true" and oauth["role_attribute_path"] == ""
    assert oauth["org_attribute_path"] == "groups" and oauth["use_pkce"] == "true"
    assert oauth["allow_assign_grafana_admin"] == "false"
    assert oauth["client_secret"] == "$__file{/run/secrets/grafana-oauth}"
    assert ini["users"]["auto_assign_org_id"] == "5" and ini["users"]["allow_sign_up"] == "false"
    assert ini["users"]["allow_org_create"] == "false"
    assert ini["auth.anonymous"]["enabled"] == "false"
    assert ini["auth"]["disable_login_form"] == "true"
    assert ini["security"]["cookie_secure"] == "true"
    assert ini["security"]["cookie_samesite"] == "lax"


def split_org_mapping(value: str) -> list[list[str]]:
    """Grafana's own reading of org_mapping: entries split on spaces and commas, each on ':'
    (org_role_mapper.go splitOrgMapping; util.SplitString)."""
    return [entry.split(":") for entry in value.replace(",", " ").split()]


def test_org_mapping_reads_back_as_written(out: Path) -> None:
    """Every entry has exactly group:org:role with a valid role; operators are Admin only in
    org 1; tenant orgs get Viewer or Editor, never Admin; the landing org maps nobody."""
    entries = split_org_mapping(grafana_ini(out)["auth.generic_oauth"]["org_mapping"])
    assert all(len(e) == 3 and e[2] in ("Viewer", "Editor", "Admin") for e in entries)
    assert [e for e in entries if e[2] == "Admin"] == [["cockpit-operators", "1", "Admin"]]
    assert ["acme-ops", "2", "Editor"] in entries and ["cockpit-initech", "4", "Viewer"] in entries
    assert not [e for e in entries if e[1] == "5"]


def test_env_file_carries_the_same_settings(out: Path) -> None:
    """GF_<SECTION>_<KEY> with dots turned into underscores, one per ini key, same values."""
    ini = grafana_ini(out)
    expected = {
        f"GF_{section.upper().replace('.', '_')}_{key.upper()}": value
        for section in ini.sections()
        for key, value in ini[section].items()
    }
    lines = (out / "grafana.env").read_text().splitlines()
    assert dict(line.split("=", 1) for line in lines) == expected
    assert expected["GF_AUTH_GENERIC_OAUTH_ORG_MAPPING"].startswith("cockpit-operators:1:Admin")


def test_label_proxy_command_enforces_the_tenant_label(out: Path) -> None:
    """prom-label-proxy listens where the tenant datasources point, takes the tenant from the
    header the datasources send, refuses queries naming another tenant, and guards label APIs."""
    args = (out / "prom-label-proxy.args").read_text().split()
    assert args == [
        "prom-label-proxy",
        "-insecure-listen-address=0.0.0.0:8080",
        "-upstream=http://prometheus:9090",
        "-label=tenant",
        "-header-name=X-Cockpit-Tenant",
        "-error-on-replace",
        "-enable-label-apis",
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("group: acme-ops", "group: Platform Operators"), "identity-provider group name"),
        (("group: acme-ops", "group: 'ops:1:Admin'"), "identity-provider group name"),
        (("group: acme-ops", "group: 'a,b'"), "identity-provider group name"),
        (("role: Editor", "role: Admin"), "role"),
        (("landing_org_id: 5", "landing_org_id: 3"), "org 3 is grafana.landing_org_id"),
        (("landing_org_id: 5", "landing_org_id: 1"), "landing_org_id"),
        (("  landing_org_id: 5\n", ""), "landing_org_id"),
    ],
)
def test_unsafe_grafana_settings_are_refused(change: tuple[str, str], expected: str) -> None:
    """Group names Grafana would split, Admin for a tenant, and a landing org that is org 1
    or a tenant's are config errors."""
    with pytest.raises(ConfigError) as caught:
        parse_config(CONFIG.replace(*change), "x")
    assert any(expected in p for p in caught.value.problems), caught.value.problems


def test_without_oauth_local_logins_stay_and_nothing_maps(tmp_path: Path) -> None:
    """No oauth section: no generic_oauth settings, the login form stays (local admin)."""
    from exporter.render.grafana_ini import ini, settings

    config = parse_config(CONFIG.partition("  oauth:")[0] + "tenants:\n  - {id: acme}\n", "x")
    assert config.grafana is not None
    text = ini(settings(config, config.grafana))
    assert "generic_oauth" not in text and "disable_login_form = false" in text


def test_dashboards_follow_the_configs_objective_and_thresholds(tmp_path: Path, out: Path) -> None:
    """With `alerting.objective` and a threshold set, the provisioned dashboards turn red
    where the rules rendered from the same config fire, and the budget is the config's;
    without them they are the committed defaults."""
    from exporter.render.grafana import write_provisioning

    config = parse_config(
        CONFIG
        + 'alerting:\n  operators: [{webhook: {url: "http://sink.example/ops"}}]\n'
        + "  objective: 0.99\n  thresholds: {queued_too_long: 10m}\n",
        "x",
    )
    write_provisioning(config, tmp_path)

    def panels(root: Path, uid: str) -> dict[str, dict]:
        board = load(root / "dashboards" / "org-1" / f"{uid}.json")
        return {p["title"]: p for p in board["panels"]}

    def steps(panel: dict) -> list:
        return [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    tuned, default = (
        panels(tmp_path, "cockpit-tenant-overview"),
        panels(out, "cockpit-tenant-overview"),
    )
    assert steps(tuned["Oldest queued run"]) == [None, 600]
    assert steps(default["Oldest queued run"]) == [None, 1800]
    assert steps(tuned["Run failure ratio"]) == [None, 0.01]
    assert ") / 0.01" in tuned["Error budget left (30 days)"]["targets"][0]["expr"]
    assert ") / 0.05" in default["Error budget left (30 days)"]["targets"][0]["expr"]
    fleet = panels(tmp_path, "cockpit-fleet")
    assert steps(fleet["Run failure ratio by tenant"]) == [None, 0.01]
    committed = json.loads((Path(__file__).parent.parent / "grafana" / "dashboards" /
                            "cockpit-tenant-overview.json").read_text())  # fmt: skip
    assert load(out / "dashboards" / "org-1" / "cockpit-tenant-overview.json") == committed


@pytest.mark.parametrize(
    ("tenants", "problem"),
    [
        (
            "  - {id: operators, grafana: {org_id: 3}}\n",
            "tenants[0].grafana.group: group 'cockpit-operators' (the default for tenant id"
            " 'operators') is also grafana.operators_group's",
        ),
        (
            "  - {id: acme, grafana: {org_id: 3, group: shared-group, role: Editor}}\n"
            "  - {id: globex, grafana: {org_id: 4, group: shared-group}}\n",
            "tenants[1].grafana.group: group 'shared-group' is also tenants[0].grafana.group's",
        ),
        (
            "  - {id: acme, grafana: {org_id: 3, group: cockpit-operators}}\n",
            "tenants[0].grafana.group: group 'cockpit-operators' is also grafana.operators_group's",
        ),
        (
            "  - {id: acme, grafana: {org_id: 3, group: cockpit-globex}}\n"
            "  - {id: globex, grafana: {org_id: 4}}\n",
            "tenants[1].grafana.group: group 'cockpit-globex' (the default for tenant id"
            " 'globex') is also tenants[0].grafana.group's",
        ),
    ],
)
def test_identity_groups_cannot_collide(
    tmp_path: Path, tenants: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One identity-provider group per org: a tenant group equal to the operators' (given,
    or by a tenant id's default), or two tenants sharing one, are refused by check-config
    and by `render grafana`, naming both."""
    head = CONFIG.split("tenants:", maxsplit=1)[0]
    config = tmp_path / "config.yaml"
    config.write_text(head + "tenants:\n" + tenants)
    for command in (
        ["check-config", str(config)],
        ["render", "grafana", "--config", str(config), "--out", str(tmp_path / "o")],
    ):
        assert main(command) == 2
        stderr = capsys.readouterr().err
        assert problem in stderr
        assert "each org needs a group of its own" in stderr
    assert not (tmp_path / "o").exists()
