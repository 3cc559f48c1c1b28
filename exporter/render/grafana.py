"""Grafana provisioning from the tenant config: org 1 for operators, one org per tenant.

Each tenant org gets one datasource (pinned uid, not editable) that goes through a
tenant-enforcing query proxy and names its tenant in a header kept in secureJsonData, and a
dashboard provider whose dashboards are fixed to that tenant. Beside them: the server
settings (grafana.ini and GF_* variables, see grafana_ini.py) and the label proxy's command.
"""

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from exporter.alertrules import RuleSettings
from exporter.config import Config, ConfigError
from exporter.grafana.build import build
from exporter.grafana.model import Board
from exporter.grafana.panels import boards
from exporter.receivers import Grafana
from exporter.render.grafana_ini import OPERATORS_ORG, env, ini, label_proxy_args, settings
from exporter.render.yamlout import dump


def grafana_settings(config: Config) -> Grafana:
    """The config's `grafana` section, once every tenant has an org; else a ConfigError."""
    if config.grafana is None:
        raise ConfigError(config.source, ["grafana: needed to render Grafana provisioning"])
    missing = [t for t in config.tenants if t not in config.grafana_orgs]
    if missing:
        raise ConfigError(
            config.source, [f"tenant {t!r}: set grafana.org_id to give it an org" for t in missing]
        )
    return config.grafana


def datasources(config: Config) -> dict[str, Any]:
    """The datasources file: one default Prometheus datasource per org."""
    grafana = grafana_settings(config)
    operators: dict[str, Any] = {
        "name": "Cockpit (all tenants)",
        "uid": "cockpit-all",
        "orgId": OPERATORS_ORG,
        "type": "prometheus",
        "access": "proxy",
        "url": grafana.prometheus_url,
        "isDefault": True,
        "editable": False,
    }
    if grafana.traces_datasource_uid is not None:
        # Exemplars carry `trace_id`: Grafana links each one to that trace (Tempo, Jaeger).
        operators["jsonData"] = {"exemplarTraceIdDestinations": [
            {"name": "trace_id", "datasourceUid": grafana.traces_datasource_uid}
        ]}  # fmt: skip
    entries = [operators]
    for tenant, org in config.grafana_orgs.items():
        entries.append(
            {
                "name": f"Cockpit {tenant}",
                "uid": f"cockpit-{tenant}",
                "orgId": org.org_id,
                "type": "prometheus",
                "access": "proxy",
                "url": grafana.tenant_proxy_url,
                "isDefault": True,
                "editable": False,
                # Header name in jsonData, value in secureJsonData: org users cannot read or
                # change which tenant the proxy is told.
                "jsonData": {"httpHeaderName1": grafana.tenant_header},
                "secureJsonData": {"httpHeaderValue1": tenant},
            }
        )
    return {"apiVersion": 1, "datasources": entries}


def providers(config: Config) -> dict[str, Any]:
    """The dashboard providers file: a read-only Cockpit folder in every org."""
    grafana = grafana_settings(config)
    orgs = [(OPERATORS_ORG, "operators")]
    orgs += [(org.org_id, tenant) for tenant, org in config.grafana_orgs.items()]
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": f"cockpit-{name}",
                "orgId": org_id,
                "folder": "Cockpit",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "options": {"path": f"{grafana.dashboards_path}/org-{org_id}"},
            }
            for org_id, name in orgs
        ],
    }


def for_tenants(board: Board) -> Board:
    """`board` without the panels that read the exporter's own, tenant-less series."""
    return replace(board, panels=tuple(p for p in board.panels if not p.operators_only))


def fixed_to_tenant(dashboard: dict[str, Any], tenant: str) -> dict[str, Any]:
    """A copy of `dashboard` whose tenant variable is a hidden constant."""
    fixed: dict[str, Any] = json.loads(json.dumps(dashboard))
    for variable in fixed["templating"]["list"]:
        if variable["name"] == "tenant":
            variable.clear()
            variable.update(
                {"name": "tenant", "type": "constant", "query": tenant, "hide": 2,
                 "current": {"text": tenant, "value": tenant}}
            )  # fmt: skip
    return fixed


def write_provisioning(config: Config, out: Path) -> list[Path]:
    """Write every file under `out`; returns what was written."""
    files: dict[Path, str] = {
        out / "provisioning" / "datasources" / "cockpit.yaml": dump(datasources(config)),
        out / "provisioning" / "dashboards" / "cockpit.yaml": dump(providers(config)),
        out / "grafana.ini": ini(settings(config, grafana_settings(config))),
        out / "grafana.env": env(settings(config, grafana_settings(config))),
        out / "prom-label-proxy.args": "\n".join(label_proxy_args(grafana_settings(config))) + "\n",
    }
    # The config's objective and alert thresholds, as `render rules --config` uses them.
    every = boards(config.alerting or RuleSettings())
    for board in (build(b) for b in every):
        files[out / "dashboards" / f"org-{OPERATORS_ORG}" / f"{board['uid']}.json"] = (
            json.dumps(board, indent=2, sort_keys=True) + "\n"
        )
    tenant_boards = [build(for_tenants(board)) for board in every if not board.operators_only]
    for tenant, org in config.grafana_orgs.items():
        for board in tenant_boards:
            path = out / "dashboards" / f"org-{org.org_id}" / f"{board['uid']}.json"
            files[path] = (
                json.dumps(fixed_to_tenant(board, tenant), indent=2, sort_keys=True) + "\n"
            )
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(files)
