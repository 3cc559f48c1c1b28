"""The web configuration file, in Prometheus exporter-toolkit's format plus bearer tokens.

```yaml
tls_server_config: {cert_file: ..., key_file: ..., client_ca_file: ..., client_auth_type: ...}
basic_auth_users: {alice: <bcrypt hash>}
bearer_tokens:                       # our extension
  - {name: acme-grafana, sha256: <hex of the token's SHA-256>, tenants: [acme]}
```
"""

import re
import ssl
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, Field, ValidationError, model_validator

from exporter.config import ConfigError, pydantic_problems
from exporter.fields import Model, TenantId

BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSIONS = {
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# Python's ssl module verifies any certificate it requests, so the toolkit's two modes
# that accept unverified client certificates cannot be offered.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


def _bcrypt(value: str) -> str:
    if not BCRYPT.fullmatch(value):
        raise ValueError("must be a bcrypt hash ($2y$...), e.g. from `htpasswd -nBC 10 user`")
    return value


def _sha256(value: str) -> str:
    if not SHA256.fullmatch(value):
        raise ValueError("must be the token's SHA-256 as 64 lowercase hex digits")
    return value


class TlsServerConfig(Model):
    """Server certificate and, optionally, client certificate verification."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: Literal[
        "NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"
    ] = "NoClientCert"
    min_version: Literal["TLS12", "TLS13"] = "TLS12"

    @model_validator(mode="after")
    def _ca_when_verifying(self) -> "TlsServerConfig":
        if self.client_auth_type != "NoClientCert" and self.client_ca_file is None:
            raise ValueError(f"client_auth_type {self.client_auth_type} needs client_ca_file")
        return self


class BearerToken(Model):
    """A bearer token, stored as its SHA-256; optionally limited to some tenants."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")
    sha256: Annotated[str, AfterValidator(_sha256)]
    tenants: list[TenantId] | None = None


class WebConfig(Model):
    """TLS and credentials for the HTTP endpoints."""

    tls_server_config: TlsServerConfig | None = None
    basic_auth_users: dict[str, Annotated[str, AfterValidator(_bcrypt)]] = Field(
        default_factory=dict
    )
    bearer_tokens: list[BearerToken] = Field(default_factory=list)

    @property
    def auth_required(self) -> bool:
        """Whether requests other than health checks need a credential."""
        return bool(self.basic_auth_users or self.bearer_tokens)


def load_web_config(path: Path) -> WebConfig:
    """Read and check a web config file; every problem is reported with its location."""
    source = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"invalid YAML: {exc}"]) from None
    try:
        config = WebConfig.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(source, list(pydantic_problems(exc, WebConfig))) from None
    if config.tls_server_config is not None:
        ssl_context(config.tls_server_config, source)  # fail now, not at the first handshake
    return config


def ssl_context(tls: TlsServerConfig, source: str = "web config") -> ssl.SSLContext:
    """A server-side SSL context for the TLS settings."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.client_ca_file is not None:
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError) as exc:
        where = "tls_server_config"
        raise ConfigError(source, [f"{where}: cannot load certificates: {exc}"]) from None
    context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    return context
