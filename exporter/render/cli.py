"""`cockpit-exporter render ...`: print or write configuration for the tools around the exporter."""

import argparse
import sys
from pathlib import Path

from exporter.config import ConfigError, load_config
from exporter.exitcodes import fail
from exporter.grafana.build import render_all
from exporter.render.alertmanager import render_alertmanager
from exporter.render.grafana import write_provisioning
from exporter.render.rules import Settings as RuleSettings
from exporter.render.rules import render_rules
from exporter.render.yamlout import dump


def render(options: argparse.Namespace) -> int:
    """Run `cockpit-exporter render TARGET` (argparse made sure each has its flags)."""
    if options.target == "dashboards":
        return _write_dashboards(options.out)
    if options.target == "grafana":
        return _write_grafana(options.config, options.out)
    if options.target == "rules":
        settings = RuleSettings(runbooks=options.runbooks) if options.runbooks else None
        sys.stdout.write(dump(render_rules(settings)))
        return 0
    try:
        document = render_alertmanager(load_config(options.config))
    except ConfigError as exc:
        return fail(str(exc))
    sys.stdout.write(dump(document))
    return 0


def _write_dashboards(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text, encoding="utf-8")
    return 0


def _write_grafana(config: Path, out: Path) -> int:
    try:
        written = write_provisioning(load_config(config), out)
    except ConfigError as exc:
        return fail(str(exc))
    sys.stdout.write(f"wrote {len(written)} files under {out}\n")
    return 0
