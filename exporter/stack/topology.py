"""docker-compose.yml read as a local topology: loopback ports, files from the repository.

Addresses between services (`exporter:9610`) become 127.0.0.1 and the service's published
port (plus an offset; an exposed-only port the same way); the compose MariaDB becomes the
local server. Files mounted into a service are copied into the run directory with those
addresses, and the container paths they name, rewritten; secrets stay where they are and
are only pointed at.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

LOOPBACK = "127.0.0.1"
SECRETS_DIR = "/run/secrets/"


class TopologyError(Exception):
    """docker-compose.yml holds something the local stack cannot reproduce; says what."""


@dataclass
class Topology:
    """The services of docker-compose.yml and the rewrites that put them on this machine."""

    root: Path
    services: dict[str, dict[str, Any]]
    ports: dict[str, tuple[int, int]]  # service -> (container port, local port)
    replacements: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # container path -> local file

    def rewrite(self, text: str) -> str:
        """`text` with service addresses and container paths replaced, longest first."""
        keys = sorted(self.replacements, key=len, reverse=True)
        if not keys:
            return text
        # Not inside a longer name: `exporter:9610` must not match in `my-exporter:9610`.
        pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, keys)) + ")")
        return pattern.sub(lambda m: self.replacements[m.group(1)], text)

    def url(self, service: str, path: str = "/") -> str:
        """The local URL of a service with a published port."""
        return f"http://{LOOPBACK}:{self.ports[service][1]}{path}"


def load(compose_file: Path, port_offset: int, secrets_dir: Path | None = None) -> Topology:
    """Services and ports of `compose_file`, moved by `port_offset`.

    Secrets come from where the file says or, given `secrets_dir`, from there.
    """
    try:
        document = yaml.safe_load(compose_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TopologyError(f"{compose_file}: {exc}") from None
    services = document.get("services") if isinstance(document, dict) else None
    if not isinstance(services, dict):
        raise TopologyError(f"{compose_file}: no services")
    ports = {name: _published(name, spec, port_offset) for name, spec in services.items()}
    topology = Topology(compose_file.parent, services, {k: v for k, v in ports.items() if v})
    for name, (container, local) in topology.ports.items():
        topology.replacements[f"{name}:{container}"] = f"{LOOPBACK}:{local}"
    for name, secret in (document.get("secrets") or {}).items():
        file = topology.root / secret["file"]
        if secrets_dir is not None:
            file = secrets_dir / file.name
        topology.files[SECRETS_DIR + name] = file.resolve()
    return topology


def _published(name: str, spec: dict[str, Any], offset: int) -> tuple[int, int] | None:
    """The service's port, published (`[IP:]HOST:CONTAINER`) or exposed (`CONTAINER`).

    On this machine every one is a loopback port.
    """
    mappings = spec.get("ports") or [f"{p}:{p}" for p in spec.get("expose") or []]
    if len(mappings) > 1:
        raise TopologyError(f"service {name}: one published port expected, not {mappings}")
    if not mappings:
        return None
    parts = str(mappings[0]).split(":")
    if len(parts) < 2 or not parts[-1].isdigit() or not parts[-2].isdigit():
        raise TopologyError(f"service {name}: ports {mappings[0]!r} is not HOST:CONTAINER")
    return int(parts[-1]), int(parts[-2]) + offset


def bind_mounts(spec: dict[str, Any]) -> dict[str, str]:
    """Container path -> repository-relative host path of a service's bind mounts."""
    mounts = {}
    for volume in spec.get("volumes") or []:
        host, container = str(volume).split(":")[:2]
        if host.startswith("."):
            mounts[container] = host
    return mounts


def materialise(topology: Topology, services: list[str], run_dir: Path) -> None:
    """Copy every file bind-mounted into `services` to run_dir/SERVICE/, rewritten."""
    copies: dict[str, tuple[Path, Path]] = {}
    for name in services:
        for container, host in bind_mounts(topology.services[name]).items():
            copy = run_dir / name / Path(container).name
            copies[container] = (topology.root / host, copy)
            topology.files[container] = copy
    topology.replacements.update({c: str(p) for c, p in topology.files.items()})
    for source, copy in copies.values():
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(topology.rewrite(source.read_text(encoding="utf-8")), encoding="utf-8")


def start_order(topology: Topology, wanted: list[str]) -> list[str]:
    """`wanted` ordered so that each service comes after what it depends on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise TopologyError(f"depends_on cycle: {' -> '.join((*path, name))}")
        if name in order or name not in wanted:
            return
        for dependency in topology.services[name].get("depends_on") or []:
            visit(dependency, (*path, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order
