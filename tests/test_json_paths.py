"""The hand-walked JSONPaths select exactly what python-jsonpath (RFC 9535) selects."""

import random

import pytest

from exporter.sources.http_json.paths import compiled, find, simple

NAMES = ["a", "b", "items", "_x", "n1"]


def document(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value: objects and arrays down to scalars, with repeated member names."""
    kind = rng.random()
    if depth > 3 or kind < 0.3:
        return rng.choice([1, 2.5, "s", "", None, True, False, 0])
    if kind < 0.65:
        return {rng.choice(NAMES): document(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return [document(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def path(rng: random.Random) -> str:
    return "$" + "".join(
        rng.choice([f".{rng.choice(NAMES)}", "[*]"]) for _ in range(rng.randint(0, 4))
    )


def test_simple_paths_select_what_python_jsonpath_selects() -> None:
    """5,000 random documents and simple paths: the same nodes in the same order."""
    rng = random.Random(9535)
    for _ in range(5000):
        data, text = document(rng), path(rng)
        assert simple(text) is not None
        expected = [] if isinstance(data, str) and text != "$" else (
            [data] if isinstance(data, str) else compiled(text).findall(data)  # type: ignore[arg-type]
        )  # fmt: skip
        assert find(text, data) == expected, (text, data)


@pytest.mark.parametrize(
    "text", ["$..a", "$.a[0]", "$['a']", "$.a[?@.b > 1]", "$.ä", "$.a.*", "$[1:]", "$.a-b"]
)
def test_other_paths_go_to_python_jsonpath(text: str) -> None:
    """Anything beyond names and [*] is python-jsonpath's to evaluate."""
    assert simple(text) is None
    data = {"a": [{"b": 2}, {"b": 0}], "ä": 1, "a-b": 3}
    assert find(text, data) == compiled(text).findall(data)
