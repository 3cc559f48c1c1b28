"""Secrets from files or environment variables, with errors that name where, never the value."""

import os
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)
# Rendering configuration for other tools (Alertmanager, Grafana, rules) needs no secret, and
# must work where the secrets are not (a CI job, a laptop).
_SKIP = ContextVar("skip_secrets", default=False)
# Where warnings about secret files go while a configuration is checked; None: the log.
_WARNINGS: ContextVar[list[str] | None] = ContextVar("secret_warnings", default=None)
# The secret files read while a configuration is loaded (the watcher re-reads on change).
_READ: ContextVar[set[Path] | None] = ContextVar("secret_files", default=None)
_logged: set[tuple[Path, int]] = set()
# Keys a DSN's query string may set that the driver takes as the password.
PASSWORD_KEYS = frozenset({"password", "passwd"})


@contextmanager
def unread() -> Iterator[None]:
    """Within this block `read_secret` reads nothing and returns None."""
    token = _SKIP.set(True)
    try:
        yield
    finally:
        _SKIP.reset(token)


@contextmanager
def warnings_collected() -> Iterator[list[str]]:
    """Within this block, warnings about secret files go to the list, not the log."""
    found: list[str] = []
    token = _WARNINGS.set(found)
    try:
        yield found
    finally:
        _WARNINGS.reset(token)


@contextmanager
def files_read() -> Iterator[set[Path]]:
    """Within this block, every secret file `read_secret` reads is added to the set."""
    found: set[Path] = set()
    token = _READ.set(found)
    try:
        yield found
    finally:
        _READ.reset(token)


def read_secret(file: Path | None, env: str | None, where: str, what: str) -> str | None:
    """The secret from `file` (trailing newline dropped) or `env`; ValueError if unreadable."""
    if _SKIP.get():
        return None
    if file is not None:
        read = _READ.get()
        if read is not None:
            read.add(file)
        try:
            value = file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ValueError(f"{where}.{what}_file: cannot read {file}: {reason}") from None
        check_private(file, f"{where}.{what}_file")
        return value
    if env is not None:
        variable = os.environ.get(env)
        if variable is None:
            raise ValueError(f"{where}.{what}_env: variable {env} is not set")
        return variable
    return None


def check_private(file: Path, setting: str) -> None:
    """Warn when a secret file is readable by other users (once per file and mode).

    Other users: every user, or a group this process is not in (a Kubernetes secret volume
    with fsGroup is readable by the pod's own group only).
    """
    try:
        status = file.stat()
    except OSError:
        return  # the read that follows, or came before, says what is wrong
    mode = stat.S_IMODE(status.st_mode)
    everyone = mode & 0o004 and _reachable(file)
    foreign_group = mode & 0o040 and status.st_gid not in _own_groups()
    if not (everyone or foreign_group):
        return
    who = "every user" if everyone else "its group"
    message = f"{setting}: {file} is readable by {who} (mode {mode:04o}); chmod 600 it"
    collected = _WARNINGS.get()
    if collected is not None:
        collected.append(message)
    elif (file, mode) not in _logged:
        _logged.add((file, mode))
        log.warning("secret file readable by others", file=str(file), mode=f"{mode:04o}",
                    setting=setting)  # fmt: skip


def _reachable(file: Path) -> bool:
    """Whether every user may pass through each directory above `file`.

    A world-readable file in a private directory is private.
    """
    for directory in file.absolute().parents:
        try:
            if not directory.stat().st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _own_groups() -> Collection[int]:
    return {os.getegid(), *os.getgroups()}


def refuse_query_password(keys: Collection[str], where: str) -> None:
    """A password in a DSN's query string would show wherever the DSN is shown: refused."""
    if PASSWORD_KEYS & {key.lower() for key in keys}:
        raise ValueError(
            f"{where}: a password in the DSN's query string is refused (it would be shown"
            " wherever the DSN is); use password_file or password_env"
        )
