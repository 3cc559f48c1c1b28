"""What every importer shares: the result, notes, DSNs without passwords, safe names."""

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from exporter.fields import TENANT_ID
from exporter.schema import RESERVED_LABELS

_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_NAME = re.compile(r"[^a-zA-Z0-9_]+")


@dataclass
class Imported:
    """Our config as a YAML-ready mapping, and one note per thing not carried over."""

    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, where: str, what: str) -> None:
        """Record something left out or changed, and why."""
        self.notes.append(f"{where}: {what}")


def tenant_id(raw: str) -> str:
    """A tenant id from a database name or label: lower case, unsafe runs as `-`."""
    text = _UNSAFE.sub("-", raw.lower()).strip("-_") or "tenant"
    return text if TENANT_ID.fullmatch(text) else f"t-{text}"


def query_name(raw: str) -> str:
    """A query name (`[a-zA-Z_][a-zA-Z0-9_]*`) from a peer's name."""
    text = _NAME.sub("_", raw).strip("_") or "query"
    return text if not text[0].isdigit() else f"q_{text}"


def label_name(raw: str) -> str:
    """A label name we can serve: reserved ones renamed as Prometheus does (`exported_`)."""
    return f"exported_{raw}" if raw in RESERVED_LABELS else raw


def database(dsn: str, where: str, result: Imported, secret_env: str) -> dict[str, Any] | None:
    """Our `mysql` section for a peer's DSN, its password left out; None if we cannot read it."""
    try:
        url = make_url(dsn)
    except ArgumentError:
        result.note(where, "the DSN cannot be read; the database is left out")
        return None
    dialect = url.get_backend_name()
    if dialect not in ("mysql", "mariadb", "sqlite"):
        result.note(where, f"{dialect} is not a database this exporter reads; left out")
        return None
    if dialect == "sqlite":
        return {"dsn": f"sqlite:///{url.database or ''}"}
    host = url.host or "127.0.0.1"
    port = f":{url.port}" if url.port else ":3306"
    user = f"{url.username}@" if url.username else ""
    section: dict[str, Any] = {"dsn": f"mysql://{user}{host}{port}/{url.database or ''}"}
    if url.password:
        section["password_env"] = secret_env
        result.note(where, f"the password is not copied: set it in ${secret_env}")
    if url.query:
        result.note(where, f"DSN options {sorted(url.query)} are not carried over")
    return section


def secret_env(prefix: str, *parts: str) -> str:
    """The placeholder variable a password goes in: `PREFIX_PARTS_PASSWORD`, [A-Z0-9_]."""
    name = "_".join(parts).upper()
    return f"{prefix}_" + "".join(c if c.isalnum() else "_" for c in name) + "_PASSWORD"


def wrapped(sql: str, extra: dict[str, str]) -> str:
    """`sql` with columns added (`alias: expression`), as a subquery MySQL and SQLite read."""
    if not extra:
        return sql
    columns = ", ".join(f"{expression} AS {alias}" for alias, expression in extra.items())
    body = sql.strip().rstrip(";")
    return f"SELECT imported.*, {columns} FROM (\n{body}\n) AS imported"


def quoted(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
