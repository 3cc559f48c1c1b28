"""The `http_json` section of a tenant: any JSON API mapped to metrics without code.

Paths are JSONPath (RFC 9535, python-jsonpath), compiled when the config loads so a bad path
is a config error naming it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import jsonpath
from pydantic import AfterValidator, Field, model_validator

from exporter.durations import Duration, stale_after
from exporter.fields import HttpUrl, Model
from exporter.schema import (
    ConfigFile,
    FollowRedirects,
    LabelName,
    MetricName,
    QueryName,
    check_type_suffix,
)
from exporter.secrets import read_secret
from exporter.sources.base import Job, safe_url
from exporter.sources.http_json.paths import compiled

KIND = "http_json"


def _path(value: str) -> str:
    try:
        compiled(value)
    except jsonpath.JSONPathError as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(f"invalid JSONPath {value!r}: {first}") from None
    return value


JsonPath = Annotated[str, AfterValidator(_path)]


def _value(value: str) -> str:
    if value == "count":
        return value
    _path(value.removeprefix("sum:"))
    return value


class Metric(Model):
    """A metric made from the items a JSONPath selects."""

    name: MetricName
    type: Literal["gauge", "counter"]
    help: str = Field(min_length=1)
    items: JsonPath = "$"
    labels: dict[LabelName, JsonPath] = Field(default_factory=dict)
    value: Annotated[str, AfterValidator(_value)] = "count"

    @model_validator(mode="after")
    def _naming(self) -> "Metric":
        check_type_suffix(self.name, self.type)
        return self


class Basic(Model):
    """HTTP basic authentication; the password comes from a file."""

    username: str = Field(min_length=1)
    password_file: Path


class OAuth2(Model):
    """OAuth2 client credentials, as the platform source uses."""

    token_url: HttpUrl
    client_id: str = Field(min_length=1)
    client_secret_file: Path
    scope: str | None = None


class Auth(Model):
    """Exactly one way to authenticate."""

    bearer_token_file: Path | None = None
    basic: Basic | None = None
    oauth2: OAuth2 | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Auth":
        if sum(x is not None for x in (self.bearer_token_file, self.basic, self.oauth2)) != 1:
            raise ValueError("set exactly one of bearer_token_file, basic, oauth2")
        return self


class Cursor(Model):
    """The next page is the same URL with `param` set to the value at `path`."""

    param: str = Field(min_length=1)
    path: JsonPath


class Pagination(Model):
    """How to find the next page: a URL in the body, or a cursor parameter."""

    next_url: JsonPath | None = None
    cursor: Cursor | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Pagination":
        if (self.next_url is None) == (self.cursor is None):
            raise ValueError("set exactly one of next_url, cursor")
        return self


class Endpoint(Model):
    """One JSON endpoint of a tenant and the metrics read from it."""

    name: QueryName
    url: HttpUrl
    interval: Duration | None = None
    timeout: Duration | None = None
    stale_after: Duration | None = None
    auth: Auth | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    pagination: Pagination | None = None
    max_series: int | None = Field(None, ge=1)
    max_response_bytes: int | None = Field(None, ge=1024, le=1024**3)
    follow_redirects: FollowRedirects = "none"
    metrics: list[Metric] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_inline_credentials(self) -> "Endpoint":
        if any(h.lower() in ("authorization", "cookie") for h in self.headers):
            raise ValueError("credentials go in auth (read from files), not in headers")
        return self


@dataclass(frozen=True)
class Credentials:
    """Auth with its secret resolved; compared by value, never shown."""

    kind: Literal["bearer", "basic", "oauth2"]
    secret: str = field(repr=False)
    username: str = ""
    token_url: str = ""
    client_id: str = ""
    scope: str | None = None


@dataclass(frozen=True)
class Spec:
    """An endpoint with defaults applied and secrets resolved."""

    url: str
    headers: tuple[tuple[str, str], ...]
    credentials: Credentials | None
    pagination: Pagination | None
    metrics: tuple[Metric, ...]
    max_series: int
    max_response_bytes: int
    follow_redirects: bool


def jobs(tenant: str, endpoints: list[Endpoint], model: ConfigFile, where: str) -> list[Job]:
    """One job per endpoint; unreadable secrets and bad timeouts raise ValueError."""
    names = [e.name for e in endpoints]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ValueError(f"{where}[{index}].name: duplicate endpoint name {name!r}")
    return [_job(tenant, e, model, f"{where}[{i}]") for i, e in enumerate(endpoints)]


def _job(tenant: str, endpoint: Endpoint, model: ConfigFile, where: str) -> Job:
    defaults = model.defaults
    interval = endpoint.interval or defaults.interval
    timeout = endpoint.timeout or defaults.timeout
    if timeout > interval:
        raise ValueError(f"{where}.timeout: timeout ({timeout:g}s) is longer than the interval")
    spec = Spec(
        url=endpoint.url,
        headers=tuple(sorted(endpoint.headers.items())),
        credentials=_credentials(endpoint.auth, f"{where}.auth"),
        pagination=endpoint.pagination,
        metrics=tuple(endpoint.metrics),
        max_series=endpoint.max_series or defaults.max_series,
        max_response_bytes=endpoint.max_response_bytes or model.limits.max_response_bytes,
        follow_redirects=endpoint.follow_redirects == "same_origin",
    )
    stale = stale_after(endpoint.stale_after, interval, where)
    return Job(tenant, KIND, endpoint.name, interval, timeout, spec, safe_url(endpoint.url), stale)


def _credentials(auth: Auth | None, where: str) -> Credentials | None:
    if auth is None:
        return None
    if auth.bearer_token_file is not None:
        return Credentials("bearer", _secret(auth.bearer_token_file, where, "bearer_token"))
    if auth.basic is not None:
        secret = _secret(auth.basic.password_file, f"{where}.basic", "password")
        return Credentials("basic", secret, username=auth.basic.username)
    oauth = auth.oauth2
    assert oauth is not None  # Auth checks that exactly one is set
    secret = _secret(oauth.client_secret_file, f"{where}.oauth2", "client_secret")
    return Credentials(
        "oauth2", secret, token_url=oauth.token_url, client_id=oauth.client_id, scope=oauth.scope
    )


def _secret(path: Path, where: str, what: str) -> str:
    value = read_secret(path, None, where, what)
    if not value:
        raise ValueError(f"{where}.{what}_file: {path} is empty")
    return value
