"""Server TLS: exporter-toolkit's `tls_server_config` section, mapped onto Python's ssl module.

Go names for cipher suites, curves and versions are translated to OpenSSL's; what Python's
ssl module cannot do is refused when the section is validated (TlsServerConfig), so every
setting that reaches `configure` is honoured exactly. The section lives here, not with the
rest of the web config, so the two modules do not import each other.
"""

import os
import ssl
import tempfile
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, SecretStr, model_validator

from exporter.fields import Model
from exporter.secrets import check_private

# Go's tls.CipherSuites() (the secure ones) -> OpenSSL names. TLS 1.3 suites map to None:
# neither Go nor Python lets them be configured, so Go ignores them and so do we.
GO_CIPHERS: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# Ciphers Go's HTTP/2 server insists on when the suites are restricted below TLS 1.3.
HTTP2_CIPHERS = frozenset(
    {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"}
)
GO_CURVES = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}
VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


# Python's ssl verifies every client certificate it asks for: modes that accept
# unverified certificates cannot be offered.
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
TlsVersion = Literal["TLS10", "TLS11", "TLS12", "TLS13"]


def _known(table: Collection[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in table:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(sorted(table))}")
        return value

    return AfterValidator(check)


GoCipher = Annotated[str, _known(GO_CIPHERS, "cipher suite")]
GoCurve = Annotated[str, _known(GO_CURVES, "curve")]


class TlsServerConfig(Model):
    """Server certificate, client certificate policy and protocol settings."""

    cert: str | None = None
    key: SecretStr | None = None
    client_ca: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] | None = None
    min_version: TlsVersion = "TLS12"
    max_version: TlsVersion = "TLS13"
    cipher_suites: list[GoCipher] | None = None
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[GoCurve] | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        # The toolkit treats `cert_file: ""` as not given; so do we, so both say "missing".
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v != ""}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "TlsServerConfig":
        for problem in self._problems():
            raise ValueError(problem)
        return self

    def _problems(self) -> Iterator[str]:
        if (self.cert is None) == (self.cert_file is None):
            yield "set exactly one of cert or cert_file"
        if (self.key is None) == (self.key_file is None):
            yield "set exactly one of key or key_file"
        if self.client_ca is not None and self.client_ca_file is not None:
            yield "set at most one of client_ca or client_ca_file"
        yield from self._client_auth_problems()
        if VERSIONS[self.min_version] > VERSIONS[self.max_version]:
            yield f"min_version {self.min_version} is above max_version {self.max_version}"
        if self.curve_preferences and len(self.curve_preferences) > 1:
            yield (
                "curve_preferences: Python's ssl module can restrict key exchange to one curve"
                " only (SSLContext.set_ecdh_curve); list one curve, or leave the key out for"
                " OpenSSL's defaults, which offer every curve Go knows"
            )

    def _client_auth_problems(self) -> Iterator[str]:
        mode = self.client_auth_type
        if mode in UNVERIFIED_CLIENT_AUTH:
            yield (
                f"client_auth_type {mode} accepts client certificates without verifying them,"
                " which Python's ssl module cannot do; use RequireAndVerifyClientCert"
                " with client_ca_file"
            )
        elif mode not in ("NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"):
            yield f"invalid client_auth_type {mode!r}"
        elif mode == "NoClientCert" and (self.client_ca or self.client_ca_file):
            yield "a client CA is set but client_auth_type is NoClientCert"
        elif mode == "NoClientCert" and self.client_allowed_sans is not None:
            yield "client_allowed_sans needs a client_auth_type that verifies certificates"

    def relative_to(self, directory: Path) -> "TlsServerConfig":
        """A copy whose relative file paths are joined to `directory`."""
        paths = {"cert_file": self.cert_file, "key_file": self.key_file}
        paths["client_ca_file"] = self.client_ca_file
        update = {k: directory / v for k, v in paths.items() if v is not None}
        return self.model_copy(update=update)


class TlsError(Exception):
    """The TLS settings could not be applied; the message names the setting."""


def server_context(tls: TlsServerConfig) -> ssl.SSLContext:
    """A new server-side context for the settings."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    configure(context, tls)
    return context


def configure(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    """Apply the settings to `context` (also a serving one: new handshakes see them)."""
    context.minimum_version = VERSIONS[tls.min_version]
    context.maximum_version = VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    suites = [GO_CIPHERS[c] for c in tls.cipher_suites or []]
    openssl_suites = [s for s in suites if s is not None]
    try:
        if openssl_suites:
            context.set_ciphers(":".join(openssl_suites))
        if tls.curve_preferences:
            context.set_ecdh_curve(GO_CURVES[tls.curve_preferences[0]])
        _load_chain(context, tls)
        _load_client_cas(context, tls)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise TlsError(f"cannot load certificates: {_describe(exc)}") from None
    context.verify_mode = CLIENT_AUTH[tls.client_auth_type]


def _describe(exc: Exception) -> str:
    # Only the library's reason: an OSError's filename is the path we already name, and
    # nothing here may echo PEM text back.
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _load_chain(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    key = tls.key.get_secret_value() if tls.key is not None else None
    if tls.key_file is not None:
        check_private(tls.key_file, "tls_server_config.key_file")
    with _as_file(tls.cert, tls.cert_file) as cert_file, _as_file(key, tls.key_file) as key_file:
        context.load_cert_chain(cert_file, key_file)


def _load_client_cas(context: ssl.SSLContext, tls: TlsServerConfig) -> None:
    if tls.client_ca_file is not None:
        context.load_verify_locations(cafile=tls.client_ca_file)
    elif tls.client_ca is not None:
        context.load_verify_locations(cadata=tls.client_ca)
    elif tls.client_auth_type != "NoClientCert":
        # Go verifies client certificates against the system roots when no CA is given.
        context.load_default_certs(ssl.Purpose.CLIENT_AUTH)


@contextmanager
def _as_file(inline: str | None, path: Path | None) -> Iterator[Path]:
    """A path to the PEM: the configured file, or the inline text in a private temp file.

    Python's ssl loads certificate chains from files only, so inline PEM is written to a
    file only this process can read, and removed as soon as it has been loaded.
    """
    if path is not None:
        yield path
        return
    descriptor, name = tempfile.mkstemp(prefix="cockpit-tls-", suffix=".pem")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(inline or "")
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
