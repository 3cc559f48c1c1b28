"""Turn the dashboard descriptions into Grafana JSON with grafana-foundation-sdk."""

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    VariableRefresh,
)

from exporter.grafana.panels import BOARDS, Board, Panel

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "cockpit"
_KINDS: dict[str, Any] = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel}
_REF_IDS = "ABCDEFGH"


def _panel(panel: Panel) -> Any:
    builder = (
        _KINDS[panel.kind]()
        .title(panel.title)
        .description(panel.description)
        .unit(panel.unit)
        .datasource(DATASOURCE)
    )
    for ref, query in zip(_REF_IDS, panel.queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        if panel.kind != "timeseries":
            target = target.instant()
        builder = builder.with_target(target)
    return builder


def build(board: Board) -> dict[str, Any]:
    """The dashboard JSON model of `board`."""
    dashboard = (
        sdk.Dashboard(board.title)
        .uid(board.uid)
        .description(board.description)
        .tags([TAG])
        .time("now-6h", "now")
        .refresh("1m")
        .with_variable(sdk.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            sdk.QueryVariable("tenant")
            .label("Tenant")
            .datasource(DATASOURCE)
            .query("label_values(cockpit_collection_success, tenant)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        )
        .link(
            sdk.DashboardLink("Cockpit dashboards")
            .type(DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )
    for panel in board.panels:
        dashboard = dashboard.with_panel(_panel(panel))
    document: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(dashboard.build()))
    return document


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard, as committed under grafana/dashboards/."""
    return {
        f"{board.uid}.json": json.dumps(build(board), indent=2, sort_keys=True) + "\n"
        for board in BOARDS
    }
