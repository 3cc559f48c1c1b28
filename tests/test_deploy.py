"""docker-compose.yml and deploy/ agree with each other and with the exporter."""

import base64
import re
import shutil
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from exporter.config import load_config
from exporter.render.alertmanager import render_alertmanager
from exporter.render.grafana import grafana_settings
from exporter.render.grafana_ini import env, label_proxy_args, settings
from exporter.render.yamlout import dump
from exporter.settings import split_address
from exporter.stack.secrets import generate
from tests import platform_helpers

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compose secrets as `make compose-secrets` makes them (never committed)."""
    directory = tmp_path_factory.mktemp("compose") / "secrets"
    generate(directory)
    return directory


def secret_file(compose: dict, secrets_dir: Path, name: str) -> Path:
    """Where compose secret `name` is, made by `make compose-secrets` into `secrets_dir`."""
    return secrets_dir / Path(compose["secrets"][name]["file"]).name


def mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        if host.startswith("."):
            out[container] = ROOT / host
    return out


def named_volumes(service: dict) -> dict[str, str]:
    """Container path -> volume name of a service's named volumes."""
    pairs = (v.split(":")[:2] for v in service.get("volumes", []))
    return {container: host for host, container in pairs if not host.startswith(".")}


def compose_config(
    compose: dict, tmp_path: Path, secrets_dir: Path, simulator_url: str = ""
) -> Path:
    """deploy/config.yaml as the exporter container sees it, its secrets at their generated
    files (and the simulator at `simulator_url`, when given)."""
    exporter = compose["services"]["exporter"]
    text = mounts(exporter)[exporter["command"][1]].read_text()
    for name in compose["secrets"]:
        text = text.replace(f"/run/secrets/{name}", str(secret_file(compose, secrets_dir, name)))
    if simulator_url:
        text = text.replace("http://simulator:9620", simulator_url)
    copy = tmp_path / "config.yaml"
    copy.write_text(text)
    return copy


def test_compose_files_exist_and_config_is_valid(
    compose: dict, tmp_path: Path, secrets_dir: Path
) -> None:
    """Every mounted file exists; the exporter's config loads with the compose secrets, its
    databases on the MariaDB service and its platforms on the simulator service."""
    for service in compose["services"].values():
        for host in mounts(service).values():
            assert host.exists(), host
    config = load_config(compose_config(compose, tmp_path, secrets_dir))
    assert [job.tenant for job in config.jobs] == ["t0001", "t0002"]
    assert {j.database.url.host for j in config.jobs} == {"mariadb"}
    assert "mariadb" in compose["services"]
    listen = compose["services"]["simulator"]["command"]
    port = listen[listen.index("--web.listen-address") + 1].rsplit(":", 1)[1]
    assert {p.base_url.split("/t/")[0] for p in config.platforms} == {f"http://simulator:{port}"}


async def test_the_compose_platform_secrets_are_the_simulators(
    compose: dict, tmp_path: Path, secrets_dir: Path, make_exporter
) -> None:
    """The secrets made for the stack are what the compose simulator (its seed, its tenants,
    its --client-secret files) accepts: collecting from a simulator started with the same
    arguments succeeds."""
    command = compose["services"]["simulator"]["command"]
    seed = int(command[command.index("--seed") + 1])
    tenants = int(command[command.index("--tenants") + 1])
    given = [command[i + 1] for i, arg in enumerate(command) if arg == "--client-secret"]
    client_secrets = {
        tenant: secret_file(compose, secrets_dir, path.removeprefix("/run/secrets/"))
        .read_text()
        .strip()
        for tenant, path in (pair.split("=", 1) for pair in given)
    }
    assert sorted(client_secrets) == ["t0001", "t0002"]
    sim = await platform_helpers.start(tenants, seed=seed, client_secrets=client_secrets)
    try:
        text = compose_config(compose, tmp_path, secrets_dir, sim.url).read_text()
        document = yaml.safe_load(text)
        for tenant in document["tenants"]:
            del tenant["mysql"], tenant["params"]  # the platform alone: no compose MariaDB here
        document.pop("queries")
        exporter = await make_exporter(yaml.safe_dump(document))
        for job in exporter.exporter.runner.jobs():
            await exporter.exporter.run_job(job)
        samples = await exporter.samples()
    finally:
        await sim.runner.cleanup()
    success = {
        (dict(labels)["tenant"], dict(labels)["query"]): value
        for (name, labels), value in samples.items()
        if name == "cockpit_collection_success"
    }
    assert len(success) == 8 and set(success.values()) == {1.0}, success


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
    assert targets == ["alertmanager:9093"] and "127.0.0.1:9093:9093" in alertmanager["ports"]
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
    # The Apache-2.0 text pyproject names, in both (PEP 639: dist-info/licenses/).
    licence = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    assert "Apache License" in zipfile.ZipFile(wheel).read(licence).decode()
    import tarfile

    sdist = next(tmp_path.glob("cockpit_exporter-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        assert any(n.endswith("/LICENSE") for n in archive.getnames())


def test_every_image_is_pinned_and_grafana_is_new_enough(compose: dict) -> None:
    """Images name an exact version (never a moving tag); Grafana's is at least the one whose
    org_mapping the rendered settings need."""
    from exporter.render.grafana_ini import MIN_GRAFANA

    images = {n: s["image"] for n, s in compose["services"].items() if "image" in s}
    assert set(images) >= {"mariadb", "prometheus", "alertmanager", "prom-label-proxy", "grafana"}
    for name, image in images.items():
        tag = image.rsplit(":", 1)[1]
        assert re.fullmatch(r"v?\d+\.\d+(\.\d+)?", tag), (name, image)
    grafana = tuple(int(x) for x in images["grafana"].rsplit(":", 1)[1].split("."))
    assert grafana >= tuple(int(x) for x in MIN_GRAFANA.split("."))
    built = [n for n, s in compose["services"].items() if "build" in s]
    assert sorted(built) == ["exporter", "grafana-sync", "simulator"]


def deploy_grafana():
    """The `grafana` section of deploy/config.yaml, and the config."""
    config = load_config(ROOT / "deploy" / "config.yaml", secrets=False)
    return config, grafana_settings(config)


def test_grafana_settings_are_the_rendered_ones(compose: dict) -> None:
    """Grafana's environment is deploy/grafana.env, which is what `render grafana` makes of
    deploy/config.yaml; compose adds only paths, the demo admin and plain-HTTP cookies."""
    config, grafana = deploy_grafana()
    service = compose["services"]["grafana"]
    assert service["env_file"] == ["deploy/grafana.env"]
    lines = (ROOT / "deploy" / "grafana.env").read_text().splitlines()
    committed = [line for line in lines if line and not line.startswith("#")]
    rendered = env(settings(config, grafana)).splitlines()
    assert committed == rendered, "re-render deploy/grafana.env (see its first line)"
    assert set(service["environment"]) == {
        "GF_PATHS_PROVISIONING", "GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD__FILE",
        "GF_SECURITY_COOKIE_SECURE",
    }  # fmt: skip
    assert "GF_SECURITY_COOKIE_SECURE=true" in rendered  # overridden for the demo only


def test_label_proxy_runs_the_rendered_arguments_between_grafana_and_prometheus(
    compose: dict,
) -> None:
    """The proxy's command is `render grafana`'s prom-label-proxy.args; the tenant orgs'
    datasource URL is the proxy service on its listen port, and its upstream is the
    Prometheus service. It publishes no port."""
    _, grafana = deploy_grafana()
    proxy = compose["services"]["prom-label-proxy"]
    args = label_proxy_args(grafana)
    assert args[0] == "prom-label-proxy" and proxy["command"] == args[1:]
    assert "ports" not in proxy
    listen = next(a for a in args if a.startswith("-insecure-listen-address="))
    tenant_url = urlsplit(str(grafana.tenant_proxy_url))
    assert (tenant_url.hostname, str(tenant_url.port)) == ("prom-label-proxy", listen[-4:])
    prometheus_url = urlsplit(str(grafana.prometheus_url))
    assert prometheus_url.hostname == "prometheus" and prometheus_url.port == 9090
    assert "127.0.0.1:9090:9090" in compose["services"]["prometheus"]["ports"]


def test_grafana_sync_writes_where_grafana_reads(compose: dict, secrets_dir: Path) -> None:
    """grafana-sync provisions into a volume Grafana mounts at the same path, read-only:
    GF_PATHS_PROVISIONING and grafana.dashboards_path point into it. It talks to the
    Grafana service with the admin Grafana is given, and waits for it."""
    from exporter.cli import _parser

    _, grafana = deploy_grafana()
    sync, server = compose["services"]["grafana-sync"], compose["services"]["grafana"]
    options = _parser().parse_args(sync["command"])
    out = str(options.provision)
    assert named_volumes(server)[out] == named_volumes(sync)[out]
    assert f"{named_volumes(sync)[out]}:{out}:ro" in server["volumes"]
    assert server["environment"]["GF_PATHS_PROVISIONING"] == f"{out}/provisioning"
    assert grafana.dashboards_path == f"{out}/dashboards"
    assert options.url == "http://grafana:3000" and "127.0.0.1:3000:3000" in server["ports"]
    assert options.wait >= 60 and server["depends_on"]["grafana-sync"] == {
        "condition": "service_started"
    }
    assert str(options.config) in mounts(sync)
    secrets = {
        name: secret_file(compose, secrets_dir, name).read_text().strip()
        for name in compose["secrets"]
    }
    user = server["environment"]["GF_SECURITY_ADMIN_USER"]
    password_file = server["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    password = secrets[password_file.removeprefix("/run/secrets/")]
    assert (
        secrets[str(options.basic_auth_file).removeprefix("/run/secrets/")] == f"{user}:{password}"
    )
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"-m 0755 {out}" in dockerfile  # the volume's files are readable by Grafana's user


def test_grafana_sync_with_the_compose_arguments(
    compose: dict, tmp_path: Path, secrets_dir: Path
) -> None:
    """The compose command, run against request/response pairs from Grafana's API docs
    (tests/test_grafana_sync.py): it creates the landing and both tenant orgs with the ids
    deploy/config.yaml gives them, writes providers reading dashboards_path, and reloads."""
    from tests.test_grafana_sync import DocumentedGrafana, run_sync

    command = compose["services"]["grafana-sync"]["command"]
    options = dict(zip(command[2::2], command[3::2], strict=True))
    config = compose_config(compose, tmp_path, secrets_dir)
    grafana = DocumentedGrafana({1: "Main Org."}, set(), next_id=2)
    out = tmp_path / "provisioned"
    result = run_sync(grafana, config, "--wait", options["--wait"], "--provision", str(out))
    assert result.returncode == 0, result.stderr
    assert grafana.orgs == {1: "Main Org.", 2: "cockpit-landing", 3: "t0001", 4: "t0002"}
    providers = yaml.safe_load((out / "provisioning/dashboards/cockpit.yaml").read_text())
    paths = {p["orgId"]: p["options"]["path"] for p in providers["providers"]}
    dashboards = options["--provision"] + "/dashboards"
    assert paths == {o: f"{dashboards}/org-{o}" for o in (1, 3, 4)}
    assert "reloaded dashboards" in result.stdout


def test_every_published_port_is_on_loopback_and_the_simulator_is_not_published(
    compose: dict,
) -> None:
    """Nothing of the demo stack listens beyond this machine: every published port names host
    IP 127.0.0.1; the simulator (whose admin API injects faults) and the label proxy (which
    believes any tenant header) publish none."""
    published = {
        name: service["ports"]
        for name, service in compose["services"].items()
        if "ports" in service
    }
    assert set(published) == {"exporter", "prometheus", "alertmanager", "grafana"}
    for name, ports in published.items():
        for port in ports:
            host_ip, host_port, container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", (name, port)
            assert host_port.isdigit() and container_port.isdigit()
    assert compose["services"]["simulator"]["expose"] == ["9620"]


def test_no_password_the_stack_uses_is_committed(compose: dict, secrets_dir: Path) -> None:
    """Every secret compose names lives in deploy/secrets/, which git ignores and holds no
    tracked file; `make compose-secrets` makes exactly those files, random each time, and a
    second run keeps them."""
    files = {Path(s["file"]) for s in compose["secrets"].values()}
    assert {f.parent for f in files} == {Path("deploy/secrets")}
    tracked = subprocess.run(["git", "ls-files", "deploy/secrets"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
    assert tracked == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/db_password"],
                             cwd=ROOT, check=False)  # fmt: skip
    assert ignored.returncode == 0
    assert {p.name for p in secrets_dir.iterdir()} == {f.name for f in files}
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    before = {p.name: p.read_text() for p in secrets_dir.iterdir()}
    assert generate(secrets_dir) == [] and before == {
        p.name: p.read_text() for p in secrets_dir.iterdir()
    }
    other = secrets_dir.parent / "other"
    generate(other)
    assert all((other / n).read_text() != text for n, text in before.items()), "not random"


def test_the_exporter_needs_credentials_and_prometheus_has_them(
    compose: dict, secrets_dir: Path
) -> None:
    """The compose exporter runs behind the made web config, which requires a login; the
    Prometheus service scrapes as the one user it knows, with the made password."""
    from exporter.auth import Authenticator
    from exporter.cli import _parser
    from exporter.webconfig import load_web_config

    exporter, prometheus = compose["services"]["exporter"], compose["services"]["prometheus"]
    options = _parser().parse_args(["run", *exporter["command"]])
    web_secret = str(options.web_config_file).removeprefix("/run/secrets/")
    assert web_secret in exporter["secrets"]
    web = load_web_config(secret_file(compose, secrets_dir, web_secret))
    assert web.auth_required and web.tls_server_config is None
    scrape = yaml.safe_load(mounts(prometheus)["/etc/prometheus/prometheus.yml"].read_text())
    basic = scrape["scrape_configs"][0]["basic_auth"]
    password_secret = basic["password_file"].removeprefix("/run/secrets/")
    assert password_secret in prometheus["secrets"]
    password = secret_file(compose, secrets_dir, password_secret).read_text().strip()
    credential = Authenticator(web).quick(
        "Basic " + base64.b64encode(f"{basic['username']}:{password}".encode()).decode()
    )
    assert credential is not None and Authenticator(web).check_basic(credential)  # type: ignore[arg-type]


def test_the_image_pins_its_base_by_digest_and_installs_what_the_build_resolved(
    tmp_path: Path,
) -> None:
    """Both stages start from one base named by digest; the build writes the versions it
    resolved into a constraints file, and the image installs from it (its generator, run
    here on wheel names, writes `name==version` lines)."""
    import sys

    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=python:[\w.-]+@sha256:[0-9a-f]{64}$", text, re.M)
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${BASE}", "${BASE}"]
    assert "--constraint /wheels/constraints.txt" in text
    generator = re.search(r'python -c "(.+?)" > /wheels/constraints\.txt', text)
    assert generator
    for name in ("aiohttp-3.14.5-cp311-cp311-linux_x86_64.whl",
                 "cockpit_exporter-0.1.0-py3-none-any.whl"):  # fmt: skip
        (tmp_path / name).touch()
    code = generator[1].replace("\\\\n", "\\n").replace("/wheels", str(tmp_path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=30)  # fmt: skip
    assert result.stdout == "aiohttp==3.14.5\ncockpit-exporter==0.1.0\n"
