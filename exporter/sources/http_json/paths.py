"""JSONPath over decoded JSON: RFC 9535 by python-jsonpath, and the common paths by hand.

Most configured paths are `$`, `$.a.b` or `$.items[*]`. python-jsonpath builds a match object
per node; over a large answer that cost seconds and, in collections of all those objects,
pauses of a third of a second for the whole process. Those simple paths are walked here
directly, with the same result (the tests compare both on generated documents); any other
path goes to python-jsonpath.
"""

import re
from functools import cache

import jsonpath

# `$`, then `.name` (identifier characters only) or `[*]` segments.
_SIMPLE = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\*\])*")
_SEGMENT = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[\*\]")
Segments = tuple[str | None, ...]  # a member name, or None for `[*]`


@cache
def compiled(path: str) -> jsonpath.JSONPath | jsonpath.CompoundJSONPath:
    """A JSONPath compiled once per process (specs keep the text, so they compare by value)."""
    return jsonpath.compile(path)


@cache
def simple(path: str) -> Segments | None:
    """The segments of a path simple enough to walk by hand, else None."""
    if not _SIMPLE.fullmatch(path):
        return None
    return tuple(match.group(1) for match in _SEGMENT.finditer(path, 1))


def find(path: str, data: object) -> list[object]:
    """What `path` selects in already-decoded JSON.

    python-jsonpath reads a `str` argument as JSON text, so a string value is matched here:
    `$` selects it, anything deeper selects nothing.
    """
    segments = simple(path)
    if segments is not None:
        return _walk(segments, data)
    if isinstance(data, str):
        return []
    found: list[object] = compiled(path).findall(data)  # type: ignore[arg-type]
    return found


def _walk(segments: Segments, data: object) -> list[object]:
    nodes = [data]
    for name in segments:
        following: list[object] = []
        for node in nodes:
            if name is None:  # [*]: an array's elements, an object's member values
                if isinstance(node, list):
                    following.extend(node)
                elif isinstance(node, dict):
                    following.extend(node.values())
            elif isinstance(node, dict) and name in node:
                following.append(node[name])
        nodes = following
    return nodes
