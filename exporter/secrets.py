"""Secrets from files or environment variables, with errors that name where, never the value."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

# Rendering configuration for other tools (Alertmanager, Grafana, rules) needs no secret, and
# must work where the secrets are not (a CI job, a laptop).
_SKIP = ContextVar("skip_secrets", default=False)


@contextmanager
def unread() -> Iterator[None]:
    """Within this block `read_secret` reads nothing and returns None."""
    token = _SKIP.set(True)
    try:
        yield
    finally:
        _SKIP.reset(token)


def read_secret(file: Path | None, env: str | None, where: str, what: str) -> str | None:
    """The secret from `file` (trailing newline dropped) or `env`; ValueError if unreadable."""
    if _SKIP.get():
        return None
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise ValueError(f"{where}.{what}_file: cannot read {file}: {reason}") from None
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{where}.{what}_env: variable {env} is not set")
        return value
    return None
