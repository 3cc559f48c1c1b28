"""Building blocks of every config section: the strict base model and shared field types."""

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")


def matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A validator checking that a value fully matches `pattern`."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"invalid {what} {value!r}: must match {pattern.pattern}")
        return value

    return AfterValidator(check)


class Model(BaseModel):
    """Base for every config section: frozen, and unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise ValueError("must be an http:// or https:// URL")
    return url.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


TenantId = Annotated[str, matching(TENANT_ID, "tenant id")]
