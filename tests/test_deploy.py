"""docker-compose.yml and deploy/ agree with each other and with the exporter."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.config import load_config
from exporter.render.alertmanager import render_alertmanager
from exporter.render.yamlout import dump
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


def test_prometheus_config_is_valid_and_loads_the_mounted_rules(
    compose: dict, tmp_path: Path
) -> None:
    """promtool accepts the shipped Prometheus config with its rule files where compose
    mounts them from (the committed alerts/cockpit.rules.yml)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load(mounts(prometheus)["/etc/prometheus/prometheus.yml"].read_text())
    rule_files = [mounts(prometheus)[path] for path in config["rule_files"]]
    assert rule_files == [ROOT / "alerts" / "cockpit.rules.yml"]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config | {"rule_files": [str(p) for p in rule_files]}))
    result = subprocess.run(
        [promtool, "check", "config", str(local)],
        check=False, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_alertmanager_gets_the_rendered_routing(compose: dict) -> None:
    """Prometheus sends alerts to the compose Alertmanager, whose config is exactly what
    `render alertmanager` makes of deploy/config.yaml (no secret needed to render it), and
    amtool accepts it."""
    prometheus = compose["services"]["prometheus"]
    config = yaml.safe_load(mounts(prometheus)["/etc/prometheus/prometheus.yml"].read_text())
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    alertmanager = compose["services"]["alertmanager"]
    assert targets == ["alertmanager:9093"] and "9093:9093" in alertmanager["ports"]
    routing = mounts(alertmanager)["/etc/alertmanager/alertmanager.yml"]
    rendered = dump(
        render_alertmanager(load_config(ROOT / "deploy" / "config.yaml", secrets=False))
    )
    assert routing.read_text() == rendered, "re-render deploy/alertmanager.yml (see its config)"
    amtool = shutil.which("amtool")
    assert amtool, "amtool missing: `make test` installs Debian's prometheus-alertmanager"
    check = subprocess.run(
        [amtool, "check-config", str(routing)], capture_output=True, text=True, check=False,
        timeout=30,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_dockerfile_installs_the_package_and_runs_the_console_script() -> None:
    """The image installs this project and starts the `cockpit-exporter` entry point."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "COPY exporter ./exporter" in dockerfile
    assert 'ENTRYPOINT ["cockpit-exporter"]' in dockerfile
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'cockpit-exporter = "exporter.cli:main"' in pyproject


def test_image_is_multi_stage_non_root_with_a_healthcheck() -> None:
    """Wheels built in one stage, installed in the next; a numeric non-root user; the
    healthcheck asks /healthz on the port the image exposes."""
    lines = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert any(line.startswith("COPY --from=build /wheels") for line in lines)
    user = next(line.split()[1] for line in lines if line.startswith("USER "))
    assert user.isdigit() and int(user) != 0
    exposed = next(line.split()[1] for line in lines if line.startswith("EXPOSE "))
    health = " ".join(lines[lines.index(next(x for x in lines if x.startswith("HEALTHCHECK"))) :])
    assert f"http://127.0.0.1:{exposed}/healthz" in health
    # Durable state goes where the user may write, on a volume.
    state = next(x.split("=", 1)[1] for x in lines if x.startswith("ENV COCKPIT_STATE_DIR="))
    assert f"VOLUME {state}" in lines and any(f"-o {user} " in x and state in x for x in lines)


def test_systemd_unit_runs_valid_flags_in_a_sandbox() -> None:
    """The unit's command line parses with the exporter's own parser; it runs as a system
    user with the sandboxing options; reload is SIGHUP."""
    import configparser
    import shlex

    from exporter.cli import _parser

    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read(ROOT / "deploy" / "cockpit-exporter.service")
    service = unit["Service"]
    command = shlex.split(service["ExecStart"])
    assert command[0].endswith("/cockpit-exporter")
    options = _parser().parse_args(["run", *command[1:]])
    assert str(options.config) == "/etc/cockpit/config.yaml"
    assert split_address(options.listen_address)[1] == 9610
    assert service["User"] != "root" and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # The state directory is the one systemd creates and lets the unit write.
    assert str(options.state_dir) == f"/var/lib/{service['StateDirectory']}"
    for option, value in {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "CapabilityBoundingSet": "", "RestrictNamespaces": "yes",
    }.items():  # fmt: skip
        assert service[option] == value, option


def test_wheel_and_sdist_build(tmp_path: Path) -> None:
    """`python -m build` makes a wheel and an sdist; the wheel has the console script and every
    source package, and setuptools has nothing to warn about in the metadata."""
    import sys
    import zipfile

    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SetuptoolsDeprecationWarning" not in result.stdout + result.stderr
    wheel = next(tmp_path.glob("cockpit_exporter-*.whl"))
    assert next(tmp_path.glob("cockpit_exporter-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("exporter/sources/http_json/source.py", "exporter/sources/sql/source.py"):
        assert module in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "cockpit-exporter = exporter.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )
