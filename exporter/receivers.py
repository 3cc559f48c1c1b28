"""Config sections for the tools around the exporter: alert receivers and Grafana orgs."""

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from exporter.fields import HttpUrl, Model


class Webhook(Model):
    """POST alerts to a URL."""

    url: HttpUrl


class Email(Model):
    """Mail alerts to an address (needs `alerting.smtp`)."""

    to: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+$")


class Slack(Model):
    """Post alerts to a Slack channel; the webhook URL is a secret, so it comes from a file."""

    api_url_file: Path
    channel: str = Field(min_length=2)


class Receiver(Model):
    """Exactly one of webhook, email or slack."""

    webhook: Webhook | None = None
    email: Email | None = None
    slack: Slack | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Receiver":
        if sum(x is not None for x in (self.webhook, self.email, self.slack)) != 1:
            raise ValueError("set exactly one of webhook, email, slack")
        return self


class Smtp(Model):
    """Mail server for email receivers."""

    smarthost: str = Field(pattern=r"^[^:\s]+:\d+$")
    sender: str = Field(alias="from", min_length=3)


class Alerting(Model):
    """Alert routing settings shared by all tenants."""

    operators: list[Receiver] = Field(min_length=1)
    smtp: Smtp | None = None


class TenantGrafana(Model):
    """The tenant's Grafana org and who from the identity provider gets into it."""

    org_id: int = Field(ge=2)
    group: str | None = None
    role: Literal["Viewer", "Editor", "Admin"] = "Viewer"


class Grafana(Model):
    """Grafana provisioning settings: where Prometheus is, for operators and for tenants."""

    prometheus_url: HttpUrl
    tenant_proxy_url: HttpUrl
    tenant_header: str = Field("X-Cockpit-Tenant", pattern=r"^[A-Za-z0-9-]+$")
    operators_group: str = "cockpit-operators"
    dashboards_path: str = "/var/lib/grafana/dashboards/cockpit"
