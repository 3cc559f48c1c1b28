"""Secrets from files or environment variables, with errors that name where, never the value."""

import os
from pathlib import Path


def read_secret(file: Path | None, env: str | None, where: str, what: str) -> str | None:
    """The secret from `file` (trailing newline dropped) or `env`; ValueError if unreadable."""
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
