"""docs/metrics.md and the code agree: every family the code declares is documented with its
type, every documented family exists, and the labels a real scrape shows are the documented
ones."""

import importlib
import pkgutil
import re
from pathlib import Path

import exporter
from exporter.exposition import Family
from exporter.listener import Guard, GuardCollector
from tests.helpers import demo_scraped

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^\| `(cockpit_[a-z_]+)` \| (\w+) \|([^|]*)\|")
# What the families' own suffixes add to their sample names.
SUFFIXES = ("_bucket", "_sum", "_count")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Name -> (type, labels) from the reference's tables (the demo's own metrics left out)."""
    text = (ROOT / "docs" / "metrics.md").read_text()
    text = text.split("## What a failed run leaves", 1)[1]  # after the configured examples
    out: dict[str, tuple[str, frozenset[str]]] = {}
    per_job = False
    for line in text.splitlines():
        if line.startswith("| metric |"):
            per_job = "extra labels" in line  # self-metrics: tenant, source, query besides
        found = ROW.match(line)
        if found is None:
            continue
        name, kind, labels = found.groups()
        names = {n.strip(" `") for n in labels.split(",") if n.strip(" `")}
        if per_job:
            names |= {"tenant", "source", "query"}
        out[name] = (kind, frozenset(names))
    return out


def declared() -> dict[str, str]:
    """Name -> type of every Family object any module of the package defines."""
    found: dict[str, str] = {}
    for module in pkgutil.walk_packages(exporter.__path__, "exporter."):
        if module.name.endswith("__main__"):
            continue
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if isinstance(value, Family) and value.name.startswith("cockpit_"):
                found[value.name] = value.type
    # The HTTP connection metrics come from a client_python collector of the listener.
    for family in GuardCollector(Guard(16, 1.0)).collect():
        found[family.name + ("_total" if family.type == "counter" else "")] = family.type
    return found


def test_every_declared_family_is_documented_with_its_type() -> None:
    """No family without a row, no row without a family, and the same type in both."""
    docs, code = documented(), declared()
    assert set(code) == set(docs), (sorted(set(code) - set(docs)), sorted(set(docs) - set(code)))
    assert {n: t for n, (t, _) in docs.items()} == code


async def test_the_labels_a_scrape_shows_are_the_documented_ones(
    make_exporter, tmp_path: Path
) -> None:
    """The demo (SQL, platform, http_json, state store) scraped after one run of every job:
    each family's label names are exactly its documented labels."""
    _, _, samples = await demo_scraped(make_exporter, tmp_path)
    docs = documented()
    seen: dict[str, set[str]] = {}
    for name, labels in samples:
        family = next((name[: -len(s)] for s in SUFFIXES if name.endswith(s)
                       and name[: -len(s)] in docs), name)  # fmt: skip
        if family in docs:
            seen.setdefault(family, set()).update(k for k, _ in labels if k != "le")
    wrong = {f: (sorted(labels), sorted(docs[f][1])) for f, labels in seen.items()
             if frozenset(labels) != docs[f][1]}  # fmt: skip
    assert not wrong, wrong
    assert len(seen) > 40  # most families were there to check
