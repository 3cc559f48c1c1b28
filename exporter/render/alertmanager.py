"""Alertmanager configuration from the tenant config: each alert to the party that can act.

Every alert about a tenant carries a `tenant` label (the exporter puts it on every tenant
series, and the alert rules keep it), and every rule an `owner` (render/rules.py):

- `owner="operator"` (the exporter, its collection, its config) goes to the operators first;
  with `continue`, those marked `inform="tenant"` (stale data, a blind tenant) also reach the
  tenant's receivers. A wrong database password never pages the tenant.
- every other alert about a tenant goes to that tenant's receivers, or to the operators when
  the tenant has none (somebody must hear about an offline pool).
- alerts without a tenant, or for a tenant the config does not know, go to the operators.

Inhibitions require equal `tenant`, so one tenant's outage never silences another's alerts.
"""

from typing import Any

from exporter.config import Config, ConfigError
from exporter.receivers import Receiver, Smtp

OPERATORS = "operators"
GROUP_BY = ["alertname", "tenant"]
OPERATOR_OWNED = 'owner="operator"'


def receiver_name(tenant: str) -> str:
    """The Alertmanager receiver of a tenant."""
    return f"tenant-{tenant}"


def render_alertmanager(config: Config) -> dict[str, Any]:
    """The Alertmanager configuration as a YAML-ready mapping."""
    if config.alerting is None:
        raise ConfigError(config.source, ["alerting: needed to render Alertmanager routing"])
    routes: list[dict[str, Any]] = [
        {"matchers": [OPERATOR_OWNED], "receiver": OPERATORS, "continue": True}
    ]
    routes += [route for tenant in config.tenants for route in _tenant_routes(config, tenant)]
    receivers = [_receiver(OPERATORS, config.alerting.operators)]
    receivers += [
        _receiver(receiver_name(tenant), config.receivers[tenant])
        for tenant in config.tenants
        if config.receivers.get(tenant)
    ]
    document: dict[str, Any] = {
        "route": {
            "receiver": OPERATORS,
            "group_by": GROUP_BY,
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": receivers,
        "inhibit_rules": _inhibitions(),
    }
    if config.alerting.smtp is not None:
        document["global"] = _smtp(config.alerting.smtp)
    return document


def _tenant_routes(config: Config, tenant: str) -> list[dict[str, Any]]:
    """The tenant's own alerts, and the operators' alerts it should know about."""
    match = f'tenant="{tenant}"'
    if not config.receivers.get(tenant):
        # Operator-owned alerts already reached the operators through the first route.
        return [{"matchers": [match, 'owner!="operator"'], "receiver": OPERATORS}]
    name = receiver_name(tenant)
    return [
        {"matchers": [match, 'owner!="operator"'], "receiver": name},
        {"matchers": [match, OPERATOR_OWNED, 'inform="tenant"'], "receiver": name},
    ]


def _smtp(smtp: Smtp) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "smtp_smarthost": smtp.smarthost,
        "smtp_from": smtp.sender,
        "smtp_require_tls": smtp.require_tls,
    }
    if smtp.auth_username is not None:
        settings["smtp_auth_username"] = smtp.auth_username
        settings["smtp_auth_password_file"] = str(smtp.auth_password_file)
    return settings


def _receiver(name: str, receivers: tuple[Receiver, ...] | list[Receiver]) -> dict[str, Any]:
    """One Alertmanager receiver; every secret is referenced by file, never inlined."""
    out: dict[str, Any] = {"name": name}
    for receiver in receivers:
        key, entry = _entry(receiver)
        out.setdefault(key, []).append(entry | {"send_resolved": True})
    return out


def _entry(receiver: Receiver) -> tuple[str, dict[str, Any]]:
    if receiver.webhook is not None:
        hook: dict[str, Any] = {"url": receiver.webhook.url}
        if receiver.webhook.bearer_token_file is not None:
            credentials = str(receiver.webhook.bearer_token_file)
            hook["http_config"] = {
                "authorization": {"type": "Bearer", "credentials_file": credentials}
            }
        return "webhook_configs", hook
    if receiver.email is not None:
        return "email_configs", {"to": receiver.email.to}
    if receiver.slack is not None:
        return "slack_configs", {
            "api_url_file": str(receiver.slack.api_url_file),
            "channel": receiver.slack.channel,
            "title": "{{ .CommonLabels.tenant }}: {{ .CommonAnnotations.summary }}",
            "text": "{{ range .Alerts }}{{ .Annotations.description }}\n{{ end }}",
        }
    if receiver.pagerduty is not None:
        return "pagerduty_configs", {
            "routing_key_file": str(receiver.pagerduty.routing_key_file),
            "description": "{{ .CommonLabels.tenant }}: {{ .CommonAnnotations.summary }}",
        }
    opsgenie = receiver.opsgenie
    assert opsgenie is not None  # Receiver checks that exactly one is set
    entry: dict[str, Any] = {
        "api_key_file": str(opsgenie.api_key_file),
        "message": "{{ .CommonLabels.tenant }}: {{ .CommonAnnotations.summary }}",
    }
    if opsgenie.api_url is not None:
        entry["api_url"] = opsgenie.api_url + "/"
    return "opsgenie_configs", entry


def _inhibitions() -> list[dict[str, Any]]:
    return [
        {
            # A critical alert silences the warnings of the same alert, same tenant (the
            # run SLO's fast and slow burns share one name for this).
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["tenant", "alertname", "process_id"],
        },
        {
            # A whole pool offline says it all: not one page per agent of that pool.
            "source_matchers": ['alertname="CockpitAgentPoolOffline"'],
            "target_matchers": ['alertname="CockpitAgentOffline"'],
            "equal": ["tenant", "pool"],
        },
        {
            # While nothing is known of the tenant's platform, its alerts stay as they were:
            # no new page and no resolve from data that is merely missing.
            "source_matchers": ['alertname="CockpitTenantBlind"'],
            "target_matchers": ['owner="tenant"'],
            "equal": ["tenant"],
        },
        {
            # The blind page already says the platform collection fails.
            "source_matchers": ['alertname="CockpitTenantBlind"'],
            "target_matchers": [
                'alertname=~"CockpitCollectionFailing|CockpitDataStale"',
                'source="platform"',
            ],
            "equal": ["tenant"],
        },
    ]
