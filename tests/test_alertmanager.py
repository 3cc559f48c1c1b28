"""`render alertmanager`: per-tenant routes checked by the real amtool."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.alertrules import RuleSettings
from exporter.config import ConfigError, parse_config
from exporter.render.alertmanager import render_alertmanager
from exporter.render.rules import alerts

CONFIG = """
alerting:
  operators:
    - {{webhook: {{url: "http://127.0.0.1:9/ops", bearer_token_file: {slack}}}}}
    - {{pagerduty: {{routing_key_file: {slack}}}}}
  smtp: {{smarthost: "mail.example.com:587", from: "cockpit@example.com",
          auth_username: cockpit, auth_password_file: {slack}}}
tenants:
  - id: acme
    receivers:
      - {{webhook: {{url: "http://127.0.0.1:9/acme"}}}}
      - {{email: {{to: "oncall@acme.example"}}}}
      - {{opsgenie: {{api_key_file: {slack}, api_url: "https://api.eu.opsgenie.com"}}}}
  - id: globex
    receivers: [{{slack: {{api_url_file: {slack}, channel: "#globex-alerts"}}}}]
  - id: initech
"""


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rendered once by the real command; the tests only read it."""
    tmp_path = tmp_path_factory.mktemp("alertmanager")
    slack = tmp_path / "slack-url"
    slack.write_text("https://hooks.slack.com/services/T000/B000/XXXX\n")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(slack=slack))
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "render", "alertmanager", "--config", str(config)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "alertmanager.yml"
    out.write_text(result.stdout)
    return out


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("amtool")
    assert binary, "amtool missing: `make test` installs Debian's prometheus-alertmanager"
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False, timeout=60)


def test_amtool_accepts_the_rendered_config(rendered: Path) -> None:
    """The output is a valid Alertmanager 0.25 configuration."""
    result = amtool("check-config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["tenant=acme"], "tenant-acme"),
        (["tenant=globex", "severity=critical"], "tenant-globex"),
        (["tenant=initech"], "operators"),  # no receivers of its own: the operators
        (["alertname=CockpitExporterDown"], "operators"),  # no tenant: the operators
    ],
)
def test_each_tenant_routes_to_its_own_receiver(
    rendered: Path, labels: list[str], receiver: str
) -> None:
    """amtool's route test proves where an alert with these labels goes."""
    result = amtool(
        "config", "routes", "test", f"--config.file={rendered}",
        f"--verify.receivers={receiver}", "alertname=CockpitAgentOffline", *labels,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def expected_receivers(owner: str, inform: bool, tenant: str | None) -> list[str]:
    """Who must hear of an alert: written out from the routing rules in the docs."""
    own = {"acme": "tenant-acme", "globex": "tenant-globex"}.get(tenant or "")
    if owner == "operator":
        return ["operators", own] if inform and own else ["operators"]
    return [own] if own else ["operators"]


RULES = {(a.name, a.owner, a.inform_tenant) for a in alerts(RuleSettings())}


@pytest.mark.parametrize(("alert", "owner", "inform"), sorted(RULES))
@pytest.mark.parametrize("tenant", ["acme", "initech", "unknown", None])
def test_every_alert_reaches_the_party_that_can_act(
    rendered: Path, alert: str, owner: str, inform: bool, tenant: str | None
) -> None:
    """Every alert x tenant (with receivers, without, unknown to the config, none): operator
    alerts page the operators and inform the tenant only where the rule says so; tenant
    alerts page the tenant, or the operators when the tenant has no receivers."""
    labels = [f"alertname={alert}", f"owner={owner}", "severity=critical"]
    labels += ["inform=tenant"] if inform else []
    labels += [f"tenant={tenant}"] if tenant else []
    receivers = ",".join(expected_receivers(owner, inform, tenant))
    result = amtool(
        "config", "routes", "test", f"--config.file={rendered}",
        f"--verify.receivers={receivers}", *labels,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_database_password_never_pages_the_tenant(rendered: Path) -> None:
    """The failing collection of acme (owner operator) reaches the operators only."""
    result = amtool(
        "config", "routes", "test", f"--config.file={rendered}",
        "alertname=CockpitCollectionFailing", "owner=operator", "tenant=acme", "source=sql",
    )  # fmt: skip
    assert result.stdout.split() == ["operators"], result.stdout + result.stderr


def test_grouping_and_inhibition_stay_within_a_tenant(rendered: Path) -> None:
    """`tenant` is in group_by and in every inhibition's `equal`; no secret is inlined."""
    document = yaml.safe_load(rendered.read_text())
    assert "tenant" in document["route"]["group_by"]
    assert document["inhibit_rules"]
    assert all("tenant" in rule["equal"] for rule in document["inhibit_rules"])
    assert "hooks.slack.com" not in rendered.read_text()
    first, *routes = document["route"]["routes"]
    assert first == {"matchers": ['owner="operator"'], "receiver": "operators", "continue": True}
    tenants = [next(m for m in r["matchers"] if m.startswith("tenant=")) for r in routes]
    assert tenants == [f'tenant="{t}"' for t in ("acme", "acme", "globex", "globex", "initech")]


def test_render_needs_alerting_and_smtp_for_email() -> None:
    """Email receivers without SMTP settings, a receiver of no kind, and rendering without an
    alerting section are errors."""
    with pytest.raises(ConfigError, match=r"alerting\.smtp: email receivers need"):
        parse_config(
            "alerting: {operators: [{webhook: {url: 'http://x.example/'}}]}\n"
            "tenants: [{id: a, receivers: [{email: {to: a@b.c}}]}]\n",
            "x",
        )
    with pytest.raises(ConfigError, match="set exactly one of webhook, email, slack"):
        parse_config("alerting: {operators: [{}]}\ntenants: [{id: a}]\n", "x")
    with pytest.raises(ConfigError, match="alerting: needed to render"):
        render_alertmanager(parse_config("tenants: [{id: a}]\n", "x"))


def test_every_receiver_secret_is_a_file_reference(rendered: Path) -> None:
    """PagerDuty, Opsgenie, webhook bearer tokens and the SMTP password are referenced by
    file; no secret text is in the rendered configuration."""
    document = yaml.safe_load(rendered.read_text())
    operators = next(r for r in document["receivers"] if r["name"] == "operators")
    secret = operators["pagerduty_configs"][0]["routing_key_file"]
    assert operators["webhook_configs"][0]["http_config"]["authorization"] == {
        "type": "Bearer", "credentials_file": secret,
    }  # fmt: skip
    acme = next(r for r in document["receivers"] if r["name"] == "tenant-acme")
    assert acme["opsgenie_configs"][0]["api_key_file"] == secret
    assert acme["opsgenie_configs"][0]["api_url"] == "https://api.eu.opsgenie.com/"
    assert document["global"]["smtp_auth_password_file"] == secret
    assert document["global"]["smtp_require_tls"] is True
    assert "hooks.slack.com" not in rendered.read_text()


def test_rendering_needs_no_secret_but_running_does(tmp_path: Path) -> None:
    """`render alertmanager` and `render rules` work where the database password and the
    platform secret are not (a CI job); `check-config` still names the missing files."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "alerting: {operators: [{webhook: {url: 'http://127.0.0.1:9/ops'}}]}\n"
        "tenants:\n"
        "  - id: acme\n"
        "    mysql: {dsn: 'mysql://u@db:3306/a', password_file: /nonexistent/db}\n"
        "    platform: {base_url: 'https://p.example/api', token_url: 'https://p.example/t',\n"
        "               client_id: acme, client_secret_file: /nonexistent/secret}\n"
    )
    for target in ("alertmanager", "rules"):
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "render", target, "--config", str(config)],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, (target, result.stderr)
    check = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(config)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert check.returncode != 0
    assert "password_file: cannot read /nonexistent/db" in check.stderr + check.stdout
    assert "client_secret_file: cannot read /nonexistent/secret" in check.stderr + check.stdout
