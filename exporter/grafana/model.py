"""What a dashboard is made of, independent of Grafana's JSON: boards, panels, queries."""

from dataclasses import dataclass, field

Steps = tuple[tuple[float | None, str], ...]
GREEN: Steps = ((None, "green"),)


@dataclass(frozen=True)
class Query:
    """One PromQL target; `may_be_empty` says why no data can be a healthy answer."""

    expr: str
    legend: str = ""
    may_be_empty: str = ""
    exemplars: bool = False  # show the series' exemplars (trace ids of runs) on the graph


@dataclass(frozen=True)
class Panel:
    """A panel: `kind` is timeseries, stat or table.

    A table with several queries merges them into one row per label set, its value columns
    named by `columns`; `links` are data links (title, URL with `${__data.fields.x}`).
    """

    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    # (from value, colour) steps, the first from -infinity; Grafana's own default would
    # turn any value over 80 red.
    thresholds: Steps = GREEN
    columns: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    no_value: str = ""  # what Grafana shows instead of "No data"
    # Reads series of the exporter itself (no tenant label): left out of tenant orgs' copies.
    operators_only: bool = False


@dataclass(frozen=True)
class Variable:
    """A multi-select query variable besides `datasource` and `tenant`."""

    name: str
    label: str
    query: str
    regex: str = ""  # picks value and text (`(?<value>…)`, `(?<text>…)`) from each result


@dataclass(frozen=True)
class Board:
    """A dashboard: uid, title, one-line purpose, its panels and extra variables."""

    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)
    variables: tuple[Variable, ...] = ()
    operators_only: bool = False  # not provisioned into tenant orgs (it spans tenants)
