"""Errors a collection run can end with, each mapped to a `reason` label value."""

REASONS = ("timeout", "connect", "query", "value", "too_few_rows")
PLATFORM_REASONS = ("timeout", "connect", "http", "auth", "decode", "too_large")


class CollectionError(Exception):
    """A collection run failed for `reason`; the message is safe to log and show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
