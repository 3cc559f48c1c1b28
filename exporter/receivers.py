"""Config sections for the tools around the exporter: alert receivers and Grafana orgs."""

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from exporter.alertrules import RuleSettings
from exporter.fields import HttpUrl, Model, matching

# Grafana splits org_mapping on spaces and commas and each entry on ':', so a group name
# holding one of them would silently map another group (or grant another role).
GROUP = re.compile(r"[^\s:,\\\"'\[\]]+")
GroupName = Annotated[str, matching(GROUP, "identity-provider group name")]


class Webhook(Model):
    """POST alerts to a URL, optionally with a bearer token read from a file."""

    url: HttpUrl
    bearer_token_file: Path | None = None


class Email(Model):
    """Mail alerts to an address (needs `alerting.smtp`)."""

    to: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")


class Slack(Model):
    """Post alerts to a Slack channel; the webhook URL is a secret, so it comes from a file."""

    api_url_file: Path
    channel: str = Field(min_length=2)


class PagerDuty(Model):
    """Page through PagerDuty Events API v2; the routing key comes from a file."""

    routing_key_file: Path


class Opsgenie(Model):
    """Alert through Opsgenie; the API key comes from a file."""

    api_key_file: Path
    api_url: HttpUrl | None = None  # the EU instance is https://api.eu.opsgenie.com/


class Receiver(Model):
    """Exactly one of webhook, email, slack, pagerduty or opsgenie."""

    webhook: Webhook | None = None
    email: Email | None = None
    slack: Slack | None = None
    pagerduty: PagerDuty | None = None
    opsgenie: Opsgenie | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Receiver":
        kinds = (self.webhook, self.email, self.slack, self.pagerduty, self.opsgenie)
        if sum(x is not None for x in kinds) != 1:
            raise ValueError("set exactly one of webhook, email, slack, pagerduty, opsgenie")
        return self


class Smtp(Model):
    """Mail server for email receivers; authentication's password comes from a file."""

    smarthost: str = Field(pattern=r"^[^:\s]+:\d+$")
    sender: str = Field(alias="from", min_length=3)
    auth_username: str | None = None
    auth_password_file: Path | None = None
    require_tls: bool = True  # STARTTLS, as Alertmanager does by default

    @model_validator(mode="after")
    def _both_or_neither(self) -> "Smtp":
        if (self.auth_username is None) != (self.auth_password_file is None):
            raise ValueError("set auth_username and auth_password_file together")
        return self


class Alerting(RuleSettings):
    """Alert routing shared by all tenants, and (inherited) what the alert rules are made of."""

    operators: list[Receiver] = Field(min_length=1)
    smtp: Smtp | None = None


class TenantGrafana(Model):
    """The tenant's Grafana org and who from the identity provider gets into it.

    No Admin role: an org admin can add a datasource pointing past the tenant proxy.
    """

    org_id: int = Field(ge=2)
    group: GroupName | None = None
    role: Literal["Viewer", "Editor"] = "Viewer"


def tenant_group(tenant: str, org: TenantGrafana) -> str:
    """The identity-provider group that maps to a tenant's org: its own, or cockpit-<id>."""
    return org.group or f"cockpit-{tenant}"


class GrafanaOAuth(Model):
    """Grafana's generic OAuth login; groups from the identity provider pick the org."""

    name: str = Field("SSO", min_length=1)
    client_id: str = Field(min_length=1)
    client_secret_file: Path
    auth_url: HttpUrl
    token_url: HttpUrl
    api_url: HttpUrl
    scopes: str = "openid profile email groups"
    org_attribute_path: str = Field("groups", min_length=1)


class Grafana(Model):
    """Grafana provisioning settings: where Prometheus is, for operators and for tenants."""

    prometheus_url: HttpUrl
    tenant_proxy_url: HttpUrl
    tenant_header: str = Field("X-Cockpit-Tenant", pattern=r"^[A-Za-z0-9-]+$")
    operators_group: GroupName = "cockpit-operators"
    dashboards_path: str = "/var/lib/grafana/dashboards/cockpit"
    landing_org_id: int = Field(ge=2)
    # The operators' Tempo or Jaeger datasource: exemplars on duration panels open its traces.
    traces_datasource_uid: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,40}$")
    oauth: GrafanaOAuth | None = None
