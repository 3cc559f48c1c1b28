"""Faults a simulated tenant can be switched into at run time through the admin endpoint."""

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    """What goes wrong for one tenant; all off by default."""

    model_config = ConfigDict(extra="forbid")

    latency: float = Field(0.0, ge=0, le=60, description="seconds added to every API response")
    error_rate: float = Field(0.0, ge=0, le=1, description="share of API calls answered 503")
    rate_limit_rate: float = Field(0.0, ge=0, le=1, description="share answered 429")
    retry_after: int = Field(1, ge=0, le=600, description="Retry-After seconds on 429 and 503")
    token_ttl: int = Field(300, ge=1, le=86400, description="expires_in of new tokens")
    malformed_rate: float = Field(0.0, ge=0, le=1, description="share of bodies that are broken")
    page_size: int | None = Field(None, ge=1, le=1000, description="cap on items per page")
    offline_pool: str | None = Field(None, description="pool whose agents all go offline")
    down: bool = Field(False, description="every API call fails with 503, no Retry-After")
    token_down: bool = Field(False, description="the token endpoint answers 503")
