"""What to run for each compose service on this machine, and its readiness URL."""

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from exporter.stack.topology import LOOPBACK, Topology, TopologyError

# No binary for these here; the README says the stack runs without them.
SKIPPED = {
    "grafana": "no Grafana binary on this machine",
    "prom-label-proxy": "no prom-label-proxy binary on this machine",
    "grafana-sync": "it provisions Grafana, which is skipped",
}
# Debian's packages, the same versions the compose file pins (a test compares them).
DEBIAN = {
    "prom/prometheus": ("prometheus", "/etc/prometheus/prometheus.yml"),
    "prom/alertmanager": ("prometheus-alertmanager", "/etc/alertmanager/alertmanager.yml"),
}
_HEALTH_URL = re.compile(r"http://127\.0\.0\.1:\d+(/[^'\" ]*)")


@dataclass
class Process:
    """One service as a local process."""

    name: str
    argv: list[str]
    ready: str
    env: dict[str, str] = field(default_factory=dict)


def process(topology: Topology, name: str, run_dir: Path) -> Process:
    """The local process for compose service `name`."""
    spec = topology.services[name]
    if "build" in spec:
        return _ours(topology, name, run_dir)
    image = str(spec.get("image", "")).rsplit(":", 1)[0]
    if image not in DEBIAN:
        raise TopologyError(f"service {name}: no local way to run image {image!r}")
    binary, config = DEBIAN[image]
    if shutil.which(binary) is None:
        raise TopologyError(f"service {name}: {binary} not found (`make tools` installs it)")
    data = run_dir / name / "data"
    listen = f"--web.listen-address={LOOPBACK}:{topology.ports[name][1]}"
    argv = [binary, f"--config.file={topology.files[config]}", listen]
    if binary == "prometheus":
        argv.append(f"--storage.tsdb.path={data}")
    else:  # one Alertmanager: no gossip port on every interface
        argv += [f"--storage.path={data}", "--cluster.listen-address="]
    return Process(name, argv, topology.url(name, "/-/ready"))


def _ours(topology: Topology, name: str, run_dir: Path) -> Process:
    """A service built from deploy/Dockerfile: this package, with the compose arguments."""
    spec = topology.services[name]
    container, local = topology.ports[name]
    args = [topology.rewrite(str(a)) for a in spec.get("command") or []]
    args = [a.replace(f"0.0.0.0:{container}", f"{LOOPBACK}:{local}") for a in args]
    if "--web.listen-address" not in args:
        args += ["--web.listen-address", f"{LOOPBACK}:{local}"]
    health = " ".join(map(str, (spec.get("healthcheck") or {}).get("test") or []))
    match = _HEALTH_URL.search(health)
    ready = topology.url(name, match.group(1) if match else "/")
    # The image's ENV COCKPIT_STATE_DIR, in the run directory.
    env = {"COCKPIT_STATE_DIR": str(run_dir / name / "state")}
    return Process(name, [sys.executable, "-m", "exporter", *args], ready, env)
