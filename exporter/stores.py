"""Which durable store the settings name: a directory, or a MySQL/MariaDB table."""

from pathlib import Path

from exporter.state import FileStore, Store


def open_store(
    directory: Path | None, mysql_dsn: str | None, password_file: Path | None
) -> Store | None:
    """The configured store; ValueError naming the setting if it cannot be used."""
    if mysql_dsn is None:
        return FileStore(directory) if directory is not None else None
    # Only this store needs SQLAlchemy, 17 MB a process without it does not carry.
    from exporter.state_mysql import open_mysql  # noqa: PLC0415

    return open_mysql(mysql_dsn, password_file)
