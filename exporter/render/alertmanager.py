"""Alertmanager configuration from the tenant config: each tenant's alerts to its receivers only.

Every alert about a tenant carries a `tenant` label (the exporter puts it on every tenant
series, and the alert rules keep it). One route per tenant matches that label; alerts without
one (the exporter itself is down, say) go to the operators. Inhibitions require equal `tenant`,
so one tenant's outage never silences another tenant's alerts.
"""

from typing import Any

from exporter.config import Config, ConfigError
from exporter.receivers import Receiver

OPERATORS = "operators"
GROUP_BY = ["alertname", "tenant"]


def receiver_name(tenant: str) -> str:
    """The Alertmanager receiver of a tenant."""
    return f"tenant-{tenant}"


def render_alertmanager(config: Config) -> dict[str, Any]:
    """The Alertmanager configuration as a YAML-ready mapping."""
    if config.alerting is None:
        raise ConfigError(config.source, ["alerting: needed to render Alertmanager routing"])
    routes = [
        {
            "matchers": [f'tenant="{tenant}"'],
            "receiver": receiver_name(tenant) if config.receivers.get(tenant) else OPERATORS,
        }
        for tenant in config.tenants
    ]
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
    smtp = config.alerting.smtp
    if smtp is not None:
        document["global"] = {"smtp_smarthost": smtp.smarthost, "smtp_from": smtp.sender}
    return document


def _receiver(name: str, receivers: tuple[Receiver, ...] | list[Receiver]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    for receiver in receivers:
        if receiver.webhook is not None:
            out.setdefault("webhook_configs", []).append(
                {"url": receiver.webhook.url, "send_resolved": True}
            )
        if receiver.email is not None:
            out.setdefault("email_configs", []).append(
                {"to": receiver.email.to, "send_resolved": True}
            )
        if receiver.slack is not None:
            out.setdefault("slack_configs", []).append(
                {
                    "api_url_file": str(receiver.slack.api_url_file),
                    "channel": receiver.slack.channel,
                    "send_resolved": True,
                    "title": "{{ .CommonLabels.tenant }}: {{ .CommonAnnotations.summary }}",
                    "text": "{{ range .Alerts }}{{ .Annotations.description }}\n{{ end }}",
                }
            )
    return out


def _inhibitions() -> list[dict[str, Any]]:
    return [
        {
            # A critical alert silences the warnings of the same alert, same tenant.
            "source_matchers": ['severity="critical"'],
            "target_matchers": ['severity="warning"'],
            "equal": ["tenant", "alertname"],
        },
        {
            # A whole pool offline says it all: not one page per agent of that pool.
            "source_matchers": ['alertname="CockpitAgentPoolOffline"'],
            "target_matchers": ['alertname="CockpitAgentOffline"'],
            "equal": ["tenant", "pool"],
        },
    ]
