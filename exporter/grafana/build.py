"""Turn the dashboard descriptions into Grafana JSON with grafana-foundation-sdk."""

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType,
    DataSourceRef,
    DataTransformerConfig,
    GridPos,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from exporter.grafana.model import Board, Panel, Variable
from exporter.grafana.panels import BOARDS

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAG = "cockpit"
_KINDS: dict[str, Any] = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel}
_REF_IDS = "ABCDEFGH"
# (width of 24, height) per kind: a row of six stats on top answers "is anything wrong?" at
# a glance; graphs two by two; tables full width, they have columns to show.
_SIZES = {"stat": (4, 4), "timeseries": (12, 8), "table": (24, 8)}


def layout(panels: tuple[Panel, ...]) -> list[GridPos]:
    """Panels left to right in rows of 24 columns, a new row when the next does not fit."""
    places, x, y, row_height = [], 0, 0, 0
    for panel in panels:
        width, height = _SIZES[panel.kind]
        if x + width > 24:
            x, y, row_height = 0, y + row_height, 0
        places.append(GridPos(h=height, w=width, x=x, y=y))
        x, row_height = x + width, max(row_height, height)
    return places


def _panel(panel: Panel, place: GridPos) -> Any:
    builder = (
        _KINDS[panel.kind]()
        .grid_pos(place)
        .title(panel.title)
        .description(panel.description)
        .unit(panel.unit)
        .datasource(DATASOURCE)
        .thresholds(
            sdk.ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value, colour) for value, colour in panel.thresholds])
        )
    )
    for ref, query in zip(_REF_IDS, panel.queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        if query.exemplars:
            target = target.exemplar(True)
        if panel.kind != "timeseries":
            target = target.instant()
        if panel.kind == "table":  # one row per series, its labels as columns
            target = target.format(PromQueryFormat.TABLE)
        builder = builder.with_target(target)
    if panel.no_value:
        builder = builder.no_value(panel.no_value)
    if panel.links:
        builder = builder.data_links([sdk.DashboardLink(t).url(url) for t, url in panel.links])
    if panel.columns:
        builder = _merged(builder, panel.columns)
    return builder


def _merged(builder: Any, columns: tuple[str, ...]) -> Any:
    """Several instant table queries as one row per label set, value columns named."""
    names = {f"Value #{ref}": column for ref, column in zip(_REF_IDS, columns, strict=False)}
    return builder.with_transformation(
        DataTransformerConfig(id_val="merge", options={})
    ).with_transformation(
        DataTransformerConfig(
            id_val="organize", options={"renameByName": names, "excludeByName": {"Time": True}}
        )
    )


def _variable(variable: Variable) -> Any:
    built = (
        sdk.QueryVariable(variable.name)
        .label(variable.label)
        .datasource(DATASOURCE)
        .query(variable.query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".+")
    )
    return built.regex(variable.regex) if variable.regex else built


# Firing alerts of the selected tenants as marks on every time series panel.
ALERT_ANNOTATION_EXPR = 'ALERTS{tenant=~"$tenant",alertstate="firing"}'


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
        # "All" is `.+`, not Grafana's default of every value joined into one regex: at
        # fleet size that regex is thousands of tenants long.
        .with_variable(
            _variable(
                Variable(
                    "tenant", "Tenant", "label_values(cockpit_collection_interval_seconds, tenant)"
                )
            )
        )
        .annotation(
            sdk.AnnotationQuery()
            .name("Firing alerts")
            .datasource(DATASOURCE)
            .enable(True)
            .icon_color("red")
            .expr(ALERT_ANNOTATION_EXPR)
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
    for variable in board.variables:
        dashboard = dashboard.with_variable(_variable(variable))
    for panel, place in zip(board.panels, layout(board.panels), strict=True):
        dashboard = dashboard.with_panel(_panel(panel, place))
    document: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(dashboard.build()))
    for annotation in document["annotations"]["list"]:
        if annotation.get("expr") == ALERT_ANNOTATION_EXPR:
            # Prometheus annotation fields the SDK has no builder for (Grafana's docs:
            # title from labels, tags from label keys).
            annotation |= {"titleFormat": "{{alertname}}", "tagKeys": "severity,tenant"}
    return document


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard, as committed under grafana/dashboards/."""
    return {
        f"{board.uid}.json": json.dumps(build(board), indent=2, sort_keys=True) + "\n"
        for board in BOARDS
    }
