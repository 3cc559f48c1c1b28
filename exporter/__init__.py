"""cockpit-exporter: multi-tenant Prometheus exporter for a work platform."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cockpit-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
