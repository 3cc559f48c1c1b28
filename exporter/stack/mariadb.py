"""The compose MariaDB service on the local server: its database, user and seed scripts.

As the MariaDB image does on an empty data directory: create MARIADB_DATABASE, create
MARIADB_USER with the password from MARIADB_PASSWORD_FILE and grant it everything on that
database, then run the `.sql` files mounted under /docker-entrypoint-initdb.d in it. Seeding
happens only when the database is new, so a second start does not insert the rows twice.
"""

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

from exporter.stack.topology import Topology, TopologyError, bind_mounts

INIT_DIR = "/docker-entrypoint-initdb.d/"


@dataclass(frozen=True)
class Server:
    """Where the local MariaDB is, and an account that may create databases and users."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, dsn: str) -> "Server":
        """From `mysql://user[:password]@host[:port]`."""
        url = urlsplit(dsn)
        if url.scheme != "mysql" or not url.hostname or not url.username:
            raise TopologyError(
                f"--mysql: expected mysql://user[:password]@host[:port], got {dsn!r}"
            )
        password = unquote(url.password or "")
        return cls(url.hostname, url.port or 3306, unquote(url.username), password)


@dataclass(frozen=True)
class Names:
    """The database and user the stack gives the compose service's (renamable for tests)."""

    database: str
    user: str

    def __post_init__(self) -> None:
        for what, value in (("database", self.database), ("user", self.user)):
            if not re.fullmatch(r"[A-Za-z0-9_]{1,64}", value):
                raise TopologyError(f"{what} {value!r}: letters, digits and _ only")


def compose_names(spec: dict[str, Any]) -> Names:
    """MARIADB_DATABASE and MARIADB_USER of the compose service."""
    environment = spec.get("environment") or {}
    try:
        return Names(environment["MARIADB_DATABASE"], environment["MARIADB_USER"])
    except KeyError as exc:
        raise TopologyError(f"service mariadb: environment has no {exc.args[0]}") from None


def point_at(topology: Topology, name: str, server: Server, names: Names) -> None:
    """Make DSNs naming the compose service, its user and database name the local ones."""
    spec = topology.services[name]
    compose = compose_names(spec)
    port = int((spec.get("expose") or [3306])[0])
    local = f"{names.user}@{server.host}:{server.port}"
    topology.replacements[f"{compose.user}@{name}:{port}/{compose.database}"] = (
        f"{local}/{names.database}"
    )
    topology.replacements[f"{name}:{port}"] = f"{server.host}:{server.port}"


@dataclass(frozen=True)
class Created:
    """What a start made (and its stop drops): the database, the user, or neither."""

    database: bool
    user: bool


def _connect(server: Server) -> Any:
    return pymysql.connect(
        host=server.host, port=server.port, user=server.user, password=server.password,
        autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS, connect_timeout=10,
    )  # fmt: skip


def drop(server: Server, names: Names, created: Created) -> None:
    """Drop what this stack created (names checked by `Names`: safe to quote as they are)."""
    connection = _connect(server)
    try:
        with connection.cursor() as cursor:
            if created.database:
                cursor.execute(f"DROP DATABASE IF EXISTS `{names.database}`")
            if created.user:
                cursor.execute("DROP USER IF EXISTS %s@'%%'", (names.user,))
    finally:
        connection.close()


def prepare(topology: Topology, name: str, server: Server, names: Names) -> Created:
    """Create the database (seeded) and user when missing; says which were new."""
    spec = topology.services[name]
    password_file = (spec.get("environment") or {}).get("MARIADB_PASSWORD_FILE", "")
    password = topology.files[password_file].read_text(encoding="utf-8").strip()
    scripts = [
        topology.root / host
        for container, host in sorted(bind_mounts(spec).items())
        if container.startswith(INIT_DIR) and container.endswith(".sql")
    ]
    connection = _connect(server)
    try:
        with connection.cursor() as cursor:
            new = not cursor.execute("SHOW DATABASES LIKE %s", (_like(names.database),))
            cursor.execute("SELECT 1 FROM mysql.user WHERE User = %s AND Host = '%%'",
                           (names.user,))  # fmt: skip
            new_user = cursor.fetchone() is None
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{names.database}`")
            cursor.execute(
                "CREATE USER IF NOT EXISTS %s@'%%' IDENTIFIED BY %s", (names.user, password)
            )
            cursor.execute(f"GRANT ALL ON `{names.database}`.* TO %s@'%%'", (names.user,))
            if new:
                cursor.execute(f"USE `{names.database}`")
                for script in scripts:
                    _run_script(cursor, script)
    finally:
        connection.close()
    return Created(new, new_user)


def _like(name: str) -> str:
    return name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")


def _run_script(cursor: Any, script: Path) -> None:
    cursor.execute(script.read_text(encoding="utf-8"))
    while cursor.nextset():  # every statement's result must be read before the next call
        pass
