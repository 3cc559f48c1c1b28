"""`cockpit-exporter import query-exporter|sql-exporter FILE`: a peer's config as ours.

Our config goes to stdout, one line per thing that could not be carried over to stderr (exit
1 if there is any).
"""

import sys
from pathlib import Path
from typing import TextIO

import yaml

from exporter.config import ConfigError, parse_config
from exporter.importers import query_exporter, sql_exporter
from exporter.importers.common import Imported
from exporter.render.yamlout import dump
from exporter.secrets import unread

CONVERTERS = {"query-exporter": query_exporter.convert, "sql-exporter": sql_exporter.convert}


def run(peer: str, path: Path, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Convert the peer's config at `path`; 0 if everything carried over, 1 if not, 2 if unread."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        err.write(f"{path}: cannot read it: {exc}\n")
        return 2
    if not isinstance(document, dict):
        err.write(f"{path}: not a {peer} config (a mapping at the top)\n")
        return 2
    try:
        result = CONVERTERS[peer](document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        err.write(f"{path}: not a {peer} config this command reads: {type(exc).__name__} {exc}\n")
        return 2
    text = dump(result.config)
    _check(text, result)
    out.write(text)
    for note in result.notes:
        err.write(f"not carried over: {note}\n")
    return 1 if result.notes else 0


def _check(text: str, result: Imported) -> None:
    """Our own validation of the output (secrets not read: they are the user's to set)."""
    try:
        with unread():
            parse_config(text, "imported")
    except ConfigError as exc:
        for problem in exc.problems:
            result.note("check-config", problem)
