"""docker-compose.yml and deploy/ agree with each other and with the exporter."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.config import load_config
from exporter.settings import split_address

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        out[container] = ROOT / host
    return out


def test_compose_files_exist_and_config_is_valid(compose: dict, tmp_path: Path) -> None:
    """Every mounted file exists; the exporter's config loads with the compose secret."""
    for service in compose["services"].values():
        for host in mounts(service).values():
            assert host.exists(), host
    exporter = compose["services"]["exporter"]
    config_path = mounts(exporter)[exporter["command"][1]]
    secret = ROOT / compose["secrets"]["db_password"]["file"]
    text = config_path.read_text().replace("/run/secrets/db_password", str(secret))
    copy = tmp_path / "config.yaml"
    copy.write_text(text)
    config = load_config(copy)
    assert [job.tenant for job in config.jobs] == ["acme", "globex"]
    assert {j.database.url.host for j in config.jobs} == {"mariadb"}
    assert "mariadb" in compose["services"]


def test_ports_and_scrape_target_agree(compose: dict) -> None:
    """Prometheus scrapes the port the exporter listens on and publishes."""
    exporter = compose["services"]["exporter"]
    published = {p.split(":")[1] for p in exporter["ports"]}
    _, default_port = split_address(":9610")
    assert str(default_port) in published
    prometheus = compose["services"]["prometheus"]
    prom_config = yaml.safe_load(mounts(prometheus)["/etc/prometheus/prometheus.yml"].read_text())
    targets = prom_config["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"exporter:{default_port}"]
    assert "/healthz" in " ".join(exporter["healthcheck"]["test"])


def test_prometheus_config_is_valid() -> None:
    """promtool accepts the shipped Prometheus config."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    result = subprocess.run(
        [promtool, "check", "config", str(ROOT / "deploy" / "prometheus.yml")],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_package_and_runs_the_console_script() -> None:
    """The image installs this project and starts the `cockpit-exporter` entry point."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "COPY exporter ./exporter" in dockerfile
    assert 'ENTRYPOINT ["cockpit-exporter"]' in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'cockpit-exporter = "exporter.cli:main"' in pyproject
