"""YAML output that people read: multi-line strings (PromQL) as literal blocks."""

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings with `|`."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def dump(document: Any) -> str:
    """Render `document` in key order, multi-line strings as blocks."""
    return str(yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100))
