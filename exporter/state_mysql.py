"""Durable state in a MySQL/MariaDB table, for replicas without local disks."""

import time
from pathlib import Path

from sqlalchemy import URL, make_url, text
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from exporter.secrets import read_secret, refuse_query_password
from exporter.state import StateError


def open_mysql(mysql_dsn: str, password_file: Path | None) -> "MysqlStore":
    """The store `--state.mysql-dsn` names; ValueError naming the setting if it is unusable."""
    try:
        url = make_url(mysql_dsn)
    except (ArgumentError, ValueError):
        raise ValueError("--state.mysql-dsn: cannot parse the DSN (check host:port)") from None
    if url.drivername not in ("mysql", "mariadb", "mysql+aiomysql"):
        raise ValueError("--state.mysql-dsn: must start with mysql:// or mariadb://")
    refuse_query_password(url.query, "--state.mysql-dsn")
    password = read_secret(password_file, None, "--state.mysql", "password")
    return MysqlStore(url.set(drivername="mysql+aiomysql", password=password or url.password))


class MysqlStore:
    """One row per record in a MySQL/MariaDB table (created if missing)."""

    TABLE = "cockpit_exporter_state"

    def __init__(self, url: URL) -> None:
        self._engine: AsyncEngine = create_async_engine(url, pool_size=1, max_overflow=0)
        self._ready = False

    async def _table(self) -> None:
        if self._ready:
            return
        async with self._engine.begin() as conn:
            await conn.execute(text(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} (record_key VARCHAR(255) PRIMARY KEY,"
                " data LONGTEXT NOT NULL, updated_at DOUBLE NOT NULL)"
            ))  # fmt: skip
        self._ready = True

    async def load(self, key: str) -> bytes | None:
        """The record's row, or None."""
        try:
            await self._table()
            async with self._engine.connect() as conn:
                row = (await conn.execute(
                    text(f"SELECT data FROM {self.TABLE} WHERE record_key = :k"), {"k": key}
                )).first()  # fmt: skip
        except Exception as exc:
            raise StateError(f"cannot read: {type(exc).__name__}") from None
        return str(row[0]).encode() if row is not None else None

    async def save(self, key: str, data: bytes) -> None:
        """Insert or replace the row in one statement (atomic in InnoDB)."""
        try:
            await self._table()
            async with self._engine.begin() as conn:
                await conn.execute(
                    text(f"REPLACE INTO {self.TABLE} VALUES (:k, :d, :t)"),
                    # As text: records are JSON, and aiomysql cannot escape bytes with
                    # current PyMySQL.
                    {"k": key, "d": data.decode(), "t": time.time()},
                )
        except Exception as exc:
            raise StateError(f"cannot write: {type(exc).__name__}") from None

    async def keys(self) -> dict[str, float]:
        """Every row's key and write time."""
        await self._table()
        async with self._engine.connect() as conn:
            rows = await conn.execute(text(f"SELECT record_key, updated_at FROM {self.TABLE}"))
            return {str(k): float(t) for k, t in rows}

    async def delete(self, key: str) -> None:
        """Remove a row."""
        async with self._engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {self.TABLE} WHERE record_key = :k"), {"k": key})

    async def close(self) -> None:
        """Close the connection."""
        await self._engine.dispose()
