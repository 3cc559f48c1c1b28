"""Grafana's server settings for the cockpit, safe by default (Grafana >= 11.2).

Rendered as a `grafana.ini` fragment and as the same settings in `GF_*` environment
variables. Users reach an org only through `org_mapping`; with `role_attribute_strict` and
no `role_attribute_path`, a user whose groups match no mapping is refused at login
(Grafana's org_role_mapper returns no roles, and strict mode turns that into a denial)
instead of landing in `auto_assign_org_id`, which defaults to org 1, the operators' org.
`auto_assign_org_id` still points at an empty landing org for any other way in.
"""

from urllib.parse import urlsplit

from exporter.config import Config
from exporter.receivers import Grafana, GrafanaOAuth, tenant_group

OPERATORS_ORG = 1
MIN_GRAFANA = "11.2"  # org_mapping for generic OAuth arrived in Grafana 11.2
Settings = dict[str, dict[str, str]]


def org_mapping(config: Config, grafana: Grafana) -> str:
    """`group:org:role` entries; groups are validated to hold no separator Grafana splits on."""
    pairs = [f"{grafana.operators_group}:{OPERATORS_ORG}:Admin"]
    pairs += [
        f"{tenant_group(tenant, org)}:{org.org_id}:{org.role}"
        for tenant, org in config.grafana_orgs.items()
    ]
    return " ".join(pairs)


def settings(config: Config, grafana: Grafana) -> Settings:
    """Every section and key the cockpit sets, in Grafana's names."""
    oauth = grafana.oauth is not None
    sections: Settings = {
        "users": {
            "allow_sign_up": "false",
            "allow_org_create": "false",
            "auto_assign_org": "true",
            "auto_assign_org_id": str(grafana.landing_org_id),
            "auto_assign_org_role": "Viewer",
        },
        "auth": {"disable_login_form": "true" if oauth else "false"},
        "auth.anonymous": {"enabled": "false"},
        "security": {
            "cookie_secure": "true",
            "cookie_samesite": "lax",
            "allow_embedding": "false",
        },
    }
    if grafana.oauth is not None:
        sections["auth.generic_oauth"] = _oauth(grafana.oauth, org_mapping(config, grafana))
    return sections


def _oauth(oauth: GrafanaOAuth, mapping: str) -> dict[str, str]:
    return {
        "enabled": "true",
        "name": oauth.name,
        "client_id": oauth.client_id,
        # Grafana reads the secret from the file itself: it never enters these files.
        "client_secret": f"$__file{{{oauth.client_secret_file}}}",
        "scopes": oauth.scopes,
        "auth_url": oauth.auth_url,
        "token_url": oauth.token_url,
        "api_url": oauth.api_url,
        "use_pkce": "true",
        "allow_sign_up": "true",
        # Empty on purpose: a role from here is merged into every mapped org.
        "role_attribute_path": "",
        "role_attribute_strict": "true",
        "org_attribute_path": oauth.org_attribute_path,
        "org_mapping": mapping,
        "skip_org_role_sync": "false",
        "allow_assign_grafana_admin": "false",
    }


def ini(sections: Settings) -> str:
    """The settings as a grafana.ini fragment."""
    lines = [
        f"; cockpit-exporter: merge into grafana.ini (Grafana >= {MIN_GRAFANA} reads one file).",
        "; [auth.basic] stays on: `cockpit-exporter grafana sync` creates orgs through the",
        "; admin API, which accepts only basic authentication.",
    ]
    for section, values in sections.items():
        lines += ["", f"[{section}]", *(f"{key} = {value}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def env(sections: Settings) -> str:
    """The same settings as GF_* environment variables (one per line, for an env file)."""
    lines = []
    for section, values in sections.items():
        prefix = "GF_" + section.upper().replace(".", "_").replace("-", "_")
        lines += [f"{prefix}_{key.upper()}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def label_proxy_args(grafana: Grafana) -> list[str]:
    """prom-label-proxy's command line for the tenant orgs' datasource."""
    url = urlsplit(grafana.tenant_proxy_url)
    port = url.port or (443 if url.scheme == "https" else 80)
    return [
        "prom-label-proxy",
        f"-insecure-listen-address=0.0.0.0:{port}",
        f"-upstream={grafana.prometheus_url}",
        "-label=tenant",
        f"-header-name={grafana.tenant_header}",
        # A query naming another tenant is refused, not silently rewritten.
        "-error-on-replace",
        # Without it /api/v1/labels and label values list every tenant's.
        "-enable-label-apis",
    ]
