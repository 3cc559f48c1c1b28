"""The web configuration file: Prometheus exporter-toolkit's format plus bearer tokens.

```yaml
tls_server_config: {cert_file: ..., key_file: ..., client_ca_file: ..., client_auth_type: ...}
http_server_config: {headers: {X-Frame-Options: deny}}
rate_limit: {interval: 100ms, burst: 20}
basic_auth_users: {alice: <bcrypt hash>}
bearer_tokens:                       # our extension
  - {name: acme-grafana, sha256: <hex of the token's SHA-256>, tenants: [acme]}
```

Relative paths resolve against the file's directory, as in exporter-toolkit. Everything that
would widen access by being empty (a file, a user list, a token's tenants) is an error.
"""

import re
from collections import Counter
from collections.abc import Collection, Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from exporter.config import ConfigError, pydantic_problems, yaml_problem
from exporter.durations import parse_duration
from exporter.fields import Model, TenantId
from exporter.tls import HTTP2_CIPHERS, TlsError, TlsServerConfig, server_context

# bcrypt's cost is 4..31; a hash outside that would fail every login at request time.
BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
SHA256 = re.compile(r"[0-9a-f]{64}")
# exporter-toolkit's settable headers and, where it restricts them, their allowed values.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}


def _bcrypt(value: str) -> str:
    if not BCRYPT.fullmatch(value):
        raise ValueError(
            "must be a bcrypt hash with a cost of 4 to 31 ($2y$10$...),"
            " e.g. from `htpasswd -nBC 10 user`"
        )
    return value


def _sha256(value: str) -> str:
    if not SHA256.fullmatch(value):
        raise ValueError("must be the token's SHA-256 as 64 lowercase hex digits")
    return value


def _scalar_text(value: object) -> object:
    """YAML scalars as Go's YAML reads them into a string (`X-XSS-Protection: 1`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int | float) else value


def _interval(value: object) -> float:
    """A duration that may be 0 (rate limiting off), as in exporter-toolkit."""
    if value in (0, "0", "0s"):
        return 0.0
    return parse_duration(value)


class HttpServerConfig(Model):
    """Response headers; `http2` is accepted for compatibility (we serve HTTP/1.1)."""

    http2: bool = True
    headers: dict[str, Annotated[str, BeforeValidator(_scalar_text)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _allowed_headers(self) -> "HttpServerConfig":
        for name, value in self.headers.items():
            if name not in HEADERS:
                raise ValueError(f"header {name!r} can not be configured; allowed: {_names()}")
            allowed = HEADERS[name]
            if allowed and value not in allowed:
                raise ValueError(f"header {name}: {value!r} is not one of {', '.join(allowed)}")
        return self


def _names() -> str:
    return ", ".join(HEADERS)


class RateLimit(Model):
    """A token bucket over all requests: one token per `interval`, at most `burst` saved."""

    interval: Annotated[float, BeforeValidator(_interval)] = 0.0
    burst: int = Field(0, ge=0)


class BearerToken(Model):
    """A bearer token, stored as its SHA-256; optionally limited to some tenants."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")
    sha256: Annotated[str, AfterValidator(_sha256)]
    tenants: list[TenantId] | None = Field(None, min_length=1)
    # RFC 3339 with a zone; from then on the token gets 401. Rotate by listing the new
    # token beside the old one until the old one expires.
    expires: datetime | None = None

    @model_validator(mode="after")
    def _null_is_not_everything(self) -> "BearerToken":
        # Leaving the key out makes an operators' token; an explicit null (an empty
        # template) must not.
        if "tenants" in self.model_fields_set and self.tenants is None:
            raise ValueError("tenants is null: list tenants, or leave the key out")
        if self.expires is not None and self.expires.tzinfo is None:
            raise ValueError("expires needs a time zone (RFC 3339: 2027-01-31T00:00:00Z)")
        return self


class WebConfig(Model):
    """TLS, headers, rate limit and credentials for the HTTP endpoints."""

    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = Field(default_factory=HttpServerConfig)
    rate_limit: RateLimit | None = None
    basic_auth_users: dict[str, Annotated[str, AfterValidator(_bcrypt)]] | None = Field(
        None, min_length=1
    )
    bearer_tokens: list[BearerToken] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _checks(self) -> "WebConfig":
        for problem in self._problems():
            raise ValueError(problem)
        return self

    def _problems(self) -> Iterator[str]:
        for key in ("basic_auth_users", "bearer_tokens"):
            if key in self.model_fields_set and getattr(self, key) is None:
                yield f"{key} is null: list entries, or leave the key out"
        tokens = self.bearer_tokens or []
        for what, values in (
            ("sha256", [t.sha256 for t in tokens]),
            ("name", [t.name for t in tokens]),
        ):
            repeated = sorted(v for v, n in Counter(values).items() if n > 1)
            if repeated:
                shown = "(hash not shown)" if what == "sha256" else ", ".join(repeated)
                yield f"bearer_tokens: the same {what} is used more than once {shown}"
        yield from self._http2_problems()

    def _http2_problems(self) -> Iterator[str]:
        tls, http = self.tls_server_config, self.http_server_config
        if tls is None or not http.http2 or not tls.cipher_suites or tls.min_version == "TLS13":
            return
        if not HTTP2_CIPHERS & set(tls.cipher_suites):
            # exporter-toolkit refuses this file; refusing it too keeps one file valid for all.
            yield (
                "cipher_suites lacks the AES_128_GCM_SHA256 suite HTTP/2 needs (exporter-toolkit"
                " refuses this file): add TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 or set"
                " http_server_config.http2: false"
            )

    @property
    def auth_required(self) -> bool:
        """Whether requests other than health checks need a credential."""
        return bool(self.basic_auth_users or self.bearer_tokens)


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web config file; every problem is reported with its location."""
    source = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["the file is not UTF-8 text"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [yaml_problem(exc)]) from None
    if not document:
        raise ConfigError(source, [_EMPTY])
    if not isinstance(document, dict):
        raise ConfigError(source, ["expected a mapping of settings at the top level"])
    try:
        config = WebConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(source, list(pydantic_problems(exc, WebConfig))) from None
    if config.tls_server_config is not None:
        tls = config.tls_server_config.relative_to(path.parent)
        config = config.model_copy(update={"tls_server_config": tls})
        try:
            server_context(tls)  # fail now, not at the first handshake
        except TlsError as exc:
            raise ConfigError(source, [f"tls_server_config: {exc}"]) from None
    return config


_EMPTY = (
    "the file is empty; an empty web config would serve without TLS or credentials: to do"
    " that on purpose, leave out --web.config.file"
)


def unknown_scopes(config: WebConfig, tenants: Collection[str]) -> dict[str, list[str]]:
    """Each scoped token's tenants the exporter does not know (yet): token name -> ids.

    Not an error: a token may be issued before discovery finds its tenant, and sees it from
    then on. Start and reload treat it the same (a warning, and a gauge per token).
    """
    known = set(tenants)
    return {
        token.name: sorted(set(token.tenants) - known)
        for token in config.bearer_tokens or []
        if token.tenants is not None
    }
