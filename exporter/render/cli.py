"""`cockpit-exporter render ...`: print or write configuration for the tools around the exporter."""

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from exporter.alertrules import RuleSettings
from exporter.config import ConfigError, load_config
from exporter.exitcodes import fail
from exporter.grafana.build import render_all
from exporter.render.alertmanager import render_alertmanager
from exporter.render.grafana import write_provisioning
from exporter.render.prometheus import prometheus_topology, render_prometheus
from exporter.render.rules import render_rules
from exporter.render.yamlout import dump


def render(options: argparse.Namespace) -> int:
    """Run `cockpit-exporter render TARGET` (argparse made sure each has its flags)."""
    if options.target == "dashboards":
        return _write_dashboards(options.out)
    if options.target == "grafana":
        return _write_grafana(options.config, options.out)
    if options.target == "rules":
        return _rules(options.config, options.runbooks)
    if options.target == "prometheus":
        return _prometheus(options)
    try:
        document = render_alertmanager(load_config(options.config, secrets=False))
    except ConfigError as exc:
        return fail(str(exc))
    sys.stdout.write(dump(document))
    return 0


def _rules(config: Path | None, runbooks: str | None) -> int:
    """The rules with the config's `alerting` settings (defaults without); --runbooks wins."""
    settings = RuleSettings()
    try:
        if config is not None:
            alerting = load_config(config, secrets=False).alerting
            settings = alerting if alerting is not None else settings
        if runbooks:
            checked = RuleSettings(runbooks=runbooks).runbooks
            settings = settings.model_copy(update={"runbooks": checked})
    except ConfigError as exc:
        return fail(str(exc))
    except ValidationError as exc:
        return fail(f"--runbooks: {exc.errors(include_url=False)[0]['msg']}")
    sys.stdout.write(dump(render_rules(settings)))
    return 0


def _prometheus(options: argparse.Namespace) -> int:
    """`render prometheus`: targets from the flags, tenants and scrape job from the config."""
    try:
        topology = prometheus_topology(options)
        document = render_prometheus(load_config(options.config, secrets=False), topology)
    except ConfigError as exc:
        return fail(str(exc))
    except ValueError as exc:
        return fail(f"render prometheus: {exc}")
    sys.stdout.write(dump(document))
    return 0


def _write_dashboards(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text, encoding="utf-8")
    return 0


def _write_grafana(config: Path, out: Path) -> int:
    try:
        written = write_provisioning(load_config(config, secrets=False), out)
    except ConfigError as exc:
        return fail(str(exc))
    sys.stdout.write(f"wrote {len(written)} files under {out}\n")
    return 0
