"""The package's modules import each other in one direction: no circle.

Imports made only for type checking or deferred into a function count too: each still ties
the two modules, so a change on one side can break the other at import time or in mypy.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_names(package: Path) -> dict[str, Path]:
    """Dotted name -> file, for every module of the package under `package`."""
    base = package.parent
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that `path` (module `name`) imports, anywhere in the file."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{anchor}.{source}" if source else anchor
            for alias in node.names:  # `from a import b` names module a.b if there is one
                target = f"{source}.{alias.name}"
                found.add(target if target in known else source)
    return {module for module in found if module in known and module != name}


def circles(package: Path) -> list[list[str]]:
    """Every set of modules that import each other, directly or round about (Tarjan)."""
    names = module_names(package)
    graph = {name: imports(path, name, set(names)) for name, path in names.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in sorted(graph[name]):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == name:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return found


def test_no_module_of_the_exporter_imports_another_that_imports_it_back() -> None:
    """The exporter package has no circle of imports."""
    assert circles(ROOT / "exporter") == []


def test_a_circle_through_a_type_only_or_deferred_import_is_found(tmp_path: Path) -> None:
    """The check finds the circles it is there for, however the import is written."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for path in (package / "__init__.py", package / "sub" / "__init__.py"):
        path.write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n"
    )
    (package / "c.py").write_text("def late():\n    from .a import x\n")
    (package / "d.py").write_text("import pkg.a\n")  # into the circle, not part of it
    assert circles(package) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (package / "c.py").write_text("x = 1\n")
    assert circles(package) == []
