"""Process settings: flags override `COCKPIT_*` environment variables, which override defaults."""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from exporter.durations import Duration


class Settings(BaseSettings):
    """How this process runs (the config file says what it collects)."""

    model_config = SettingsConfigDict(env_prefix="COCKPIT_", extra="forbid", frozen=True)

    config: Path | None = None
    listen_address: str = ":9610"
    telemetry_path: str = "/metrics"
    log_level: Literal["debug", "info", "warn", "warning", "error"] = "info"
    log_format: Literal["console", "logfmt", "json"] = "console"
    ready_grace_period: Duration = 120.0
    web_config_file: Path | None = None
    enable_reload: bool = False
    # Without process_*, python_* and the exporter's own HTTP metrics (collection health stays).
    disable_exporter_metrics: bool = False
    systemd_socket: bool = False  # serve on the socket systemd passed (socket activation)
    # Slow and idle clients: headers must arrive in time, and open connections are capped.
    read_header_timeout: Duration = 10.0
    max_connections: int = Field(512, ge=1)
    shutdown_grace_period: Duration = 10.0
    # Durable collection state: run cursors and counters survive restarts. Off unless set: a
    # default relative to the working directory would depend on where the process started.
    state_dir: Path | None = None
    state_mysql_dsn: str | None = None  # instead of state_dir, for replicas without disks
    state_mysql_password_file: Path | None = None
    state_retention: Duration = 86400.0
    # Sharding: this replica collects the tenants rendezvous hashing gives shard `shard` of
    # `total_shards`; `auto` reads the index from a StatefulSet-style hostname (NAME-3).
    shard: str = "0"
    total_shards: int = 1
    # Traces of collection over OTLP/HTTP; off unless this or OTEL_EXPORTER_OTLP_*ENDPOINT.
    tracing_otlp_endpoint: str | None = None
    tracing_sample_ratio: float = Field(1.0, ge=0.0, le=1.0)
    # The audit trail of admin actions (JSON lines, hash-chained); off unless set.
    audit_file: Path | None = None
    audit_max_bytes: int = Field(16 * 2**20, ge=4096)
    audit_keep: int = Field(5, ge=1)

    @field_validator("telemetry_path")
    @classmethod
    def _valid_path(cls, path: str) -> str:
        if not path.startswith("/") or path in ("/", "/healthz", "/readyz", "/-/reload"):
            raise ValueError(f"invalid telemetry path {path!r}: a path like /metrics")
        return path

    @field_validator("state_dir", "audit_file")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_absolute():
            raise ValueError(f"{path}: give an absolute path (the working directory varies)")
        return path

    @field_validator("listen_address")
    @classmethod
    def _valid_address(cls, address: str) -> str:
        split_address(address)
        return address


def split_address(address: str) -> tuple[str | None, int]:
    """Split `host:port`, `[v6]:port` or `:port`; no host means every interface, port 0 any."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid listen address {address!r}: expected host:port or :port")
    host = host.removeprefix("[").removesuffix("]")
    return (host or None), int(port)
