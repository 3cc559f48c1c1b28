"""What this build is, as Prometheus tools print it: version, revision, build date, runtime."""

import datetime as dt
import functools
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from exporter import __version__

_SOURCE = Path(__file__).resolve().parent.parent


@functools.cache
def revision() -> str:
    """The git commit of a source checkout, else `unknown` (an installed wheel has none)."""
    if not (_SOURCE / ".git").exists():
        return "unknown"
    try:
        found = subprocess.run(
            ["git", "-C", str(_SOURCE), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, check=False, timeout=5,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return found.stdout.strip() if found.returncode == 0 and found.stdout.strip() else "unknown"


@functools.cache
def build_date() -> str:
    """When this copy was installed (its package metadata was written), `YYYYMMDD-HH:MM:SS`."""
    try:
        files = distribution("cockpit-exporter").files or []
    except PackageNotFoundError:
        return "unknown"
    metadata = next((f for f in files if f.name == "METADATA"), None)
    if metadata is None:
        return "unknown"
    try:
        stamp = Path(str(metadata.locate())).stat().st_mtime
    except OSError:
        return "unknown"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y%m%d-%H:%M:%S")


def python_version() -> str:
    """The running interpreter's version."""
    return sys.version.split()[0]


def target() -> str:
    """`os/arch`, as Go's platform line reads."""
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return f"{sys.platform}/{machine}"


def block() -> str:
    """The `--version` text, shaped like Prometheus' own."""
    return (
        f"cockpit-exporter, version {__version__} (revision: {revision()})\n"
        f"  build date:       {build_date()}\n"
        f"  python version:   {python_version()}\n"
        f"  platform:         {target()}\n"
    )
