"""Command line: `run` (the default), `check-config FILE` and `demo`."""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog
from pydantic import ValidationError

from exporter import admin_cli, buildinfo, logs
from exporter.app import ListenError, serve, warn_config
from exporter.config import Config, ConfigError, format_location, load_config
from exporter.durations import parse_duration
from exporter.exitcodes import EXIT_FAILED, fail
from exporter.memory import tune_allocator, tune_gc
from exporter.secrets import read_secret
from exporter.settings import Settings, split_address
from exporter.sharding import resolve
from exporter.sources.registry import all_jobs
from exporter.stores import open_store
from exporter.webconfig import load_web_config

log = structlog.get_logger(__name__)
_EPILOG = (
    "other commands: check-config, import, version, demo, simulate, render, grafana, audit,"
    " state"
    " (cockpit-exporter COMMAND --help)"
)
_COMMANDS = ("run", "check-config", "demo", "simulate", "render", "grafana", "import", "version",
             "audit", "state")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cockpit-exporter", description="Multi-tenant Prometheus exporter."
    )
    parser.add_argument("--version", action="store_true", help="print the version block and exit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("version", help="print version, revision, build date and platform")
    logging_flags, serving_flags = _logging_flags(), _serving_flags()
    _run_parser(commands, [logging_flags, serving_flags])
    imports = commands.add_parser(
        "import", help="print our config for a query-exporter or sql_exporter config"
    )
    imports.add_argument("peer", choices=("query-exporter", "sql-exporter"))
    imports.add_argument("file", type=Path, help="the peer's config file")
    check = commands.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", type=Path, nargs="?", help="the config file (or --config.file)")
    check.add_argument("--config.file", "--config", dest="config_file", type=Path,
                       help="the config file, as `run` takes it")  # fmt: skip
    check.add_argument(
        "--connect",
        action="store_true",
        help="also run every job once (queries, polls) and print what each would export",
    )
    demo = commands.add_parser(
        "demo", parents=[logging_flags, serving_flags], help="run on generated demo data",
        description="Run on generated demo data: three tenants, SQLite and the platform"
        " simulator. Serves on 127.0.0.1:9610 unless --web.listen-address says otherwise.",
    )  # fmt: skip
    demo.add_argument("--dir", type=Path, help="where to keep demo databases (default: temp)")
    demo.add_argument(
        "--simulator-port", dest="simulator_port", type=int, default=0,
        help="loopback port of the platform simulator (default: a free one)",
    )  # fmt: skip
    _simulate_parser(commands, [logging_flags])
    _render_parser(commands)
    _grafana_parser(commands)
    admin_cli.add_parsers(commands)
    return parser


def _logging_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--log.level",
        dest="log_level",
        choices=["debug", "info", "warn", "warning", "error"],
        help="env COCKPIT_LOG_LEVEL, default info",
    )
    flags.add_argument(
        "--log.format",
        dest="log_format",
        choices=["console", "logfmt", "json"],
        help="env COCKPIT_LOG_FORMAT, default console",
    )
    return flags


def _serving_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--web.listen-address",
        dest="listen_address",
        help="host:port to serve on (env COCKPIT_LISTEN_ADDRESS, default :9610)",
    )
    flags.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        help="path of the metrics (env COCKPIT_TELEMETRY_PATH, default /metrics)",
    )
    flags.add_argument(
        "--web.read-header-timeout",
        dest="read_header_timeout",
        help="a request's headers (and a TLS handshake) must arrive within this"
        " (env COCKPIT_READ_HEADER_TIMEOUT, default 10s)",
    )
    flags.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=int,
        help="open HTTP connections at most; at the cap the longest-waiting idle one makes"
        " room (env COCKPIT_MAX_CONNECTIONS, default 512, at most half the open-files limit)",
    )
    flags.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_const",
        const=True,
        help="serve on the socket systemd passed, not --web.listen-address (socket"
        " activation: deploy/cockpit-exporter.socket; env COCKPIT_SYSTEMD_SOCKET)",
    )
    flags.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_const",
        const=True,
        help="serve no process_*, python_* or HTTP connection metrics; collection health stays"
        " (env COCKPIT_DISABLE_EXPORTER_METRICS)",
    )
    return flags


def _run_parser(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    parents: list[argparse.ArgumentParser],
) -> None:
    run = commands.add_parser(
        "run", parents=parents, help="run the exporter (default)", epilog=_EPILOG,
        description="Run the exporter (the default command: `cockpit-exporter --config.file F`"
        " is `cockpit-exporter run --config.file F`).",
    )  # fmt: skip
    run.add_argument(
        "--config.file", "--config", dest="config", type=Path,
        help="config file (env COCKPIT_CONFIG)",
    )  # fmt: skip
    run.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        help="TLS and credentials, exporter-toolkit format (env COCKPIT_WEB_CONFIG_FILE)",
    )
    run.add_argument(
        "--web.enable-reload",
        dest="enable_reload",
        action="store_const",
        const=True,
        help="serve POST /-/reload (env COCKPIT_ENABLE_RELOAD)",
    )
    run.add_argument(
        "--shutdown.grace-period",
        dest="shutdown_grace_period",
        help="how long running collections may finish at shutdown"
        " (env COCKPIT_SHUTDOWN_GRACE_PERIOD, default 10s)",
    )
    run.add_argument(
        "--ready.grace-period",
        dest="ready_grace_period",
        help="report ready after this long even if jobs are pending"
        " (env COCKPIT_READY_GRACE_PERIOD, default 120s)",
    )
    run.add_argument(
        "--state.dir",
        dest="state_dir",
        type=Path,
        help="absolute directory where run cursors and counters are kept across restarts"
        " (env COCKPIT_STATE_DIR; default: not kept)",
    )
    run.add_argument(
        "--state.mysql-dsn",
        dest="state_mysql_dsn",
        help="keep that state in a MySQL table instead (mysql://user@host:port/database)"
        " (env COCKPIT_STATE_MYSQL_DSN)",
    )
    run.add_argument(
        "--state.mysql-password-file",
        dest="state_mysql_password_file",
        type=Path,
        help="password for --state.mysql-dsn (env COCKPIT_STATE_MYSQL_PASSWORD_FILE)",
    )
    run.add_argument(
        "--shard",
        help="this replica's shard, 0-based, or auto from a hostname ending in -N"
        " (env COCKPIT_SHARD, default 0)",
    )
    run.add_argument(
        "--total-shards",
        dest="total_shards",
        type=int,
        help="how many shards share the tenants (env COCKPIT_TOTAL_SHARDS, default 1)",
    )
    run.add_argument(
        "--tracing.otlp-endpoint",
        dest="tracing_otlp_endpoint",
        help="send traces of collection to this OTLP/HTTP endpoint (http://host:4318); also"
        " OTEL_EXPORTER_OTLP_ENDPOINT (env COCKPIT_TRACING_OTLP_ENDPOINT; default off)",
    )
    run.add_argument(
        "--tracing.sample-ratio",
        dest="tracing_sample_ratio",
        type=float,
        help="share of runs traced, 0 to 1; failed runs are always kept"
        " (env COCKPIT_TRACING_SAMPLE_RATIO, default 1)",
    )
    run.add_argument(
        "--audit.file",
        dest="audit_file",
        type=Path,
        help="append admin actions here, hash-chained JSON lines (env COCKPIT_AUDIT_FILE)",
    )
    run.add_argument(
        "--state.retention",
        dest="state_retention",
        help="how long the state of removed tenants is kept"
        " (env COCKPIT_STATE_RETENTION, default 24h)",
    )


def _simulate_parser(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    parents: list[argparse.ArgumentParser],
) -> None:
    simulate = commands.add_parser(
        "simulate", parents=parents, help="serve a simulated platform API for N tenants"
    )
    simulate.add_argument(
        "--web.listen-address",
        dest="sim_address",
        help="host:port to serve on (default 127.0.0.1:9620; --host and --port also work)",
    )
    simulate.add_argument("--tenants", type=int, default=3)
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=9620)
    simulate.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="platform seconds per wall-clock second (default 1)",
    )
    simulate.add_argument(
        "--warm-up",
        type=duration,
        default="10m",
        dest="warm_up",
        help="platform time each world runs before it is first served (default 10m; "
        "90m for queues at their steady size)",
    )
    simulate.add_argument(
        "--client-secret",
        action="append",
        default=[],
        metavar="TENANT=FILE",
        dest="client_secrets",
        help="read this tenant's client secret from FILE (default: derived from --seed)",
    )
    simulate.add_argument(
        "--write-config",
        type=Path,
        dest="write_config",
        help="write an exporter config for the simulated tenants here",
    )


def _render_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    render = commands.add_parser("render", help="print or write config for the tools around us")
    targets = render.add_subparsers(dest="target", required=True)
    alertmanager = targets.add_parser(
        "alertmanager", help="print Alertmanager routing and receivers for the tenants"
    )
    alertmanager.add_argument("--config", type=Path, required=True, help="the exporter config")
    rules = targets.add_parser("rules", help="print the Prometheus alert and recording rules")
    rules.add_argument("--config", type=Path, help="take alerting.* settings from this config")
    rules.add_argument("--runbooks", help="base URL of docs/runbooks.md")
    dashboards = targets.add_parser("dashboards", help="write the dashboards' JSON files")
    dashboards.add_argument("--out", type=Path, required=True, help="directory to write to")
    _prometheus_parser(targets)
    grafana = targets.add_parser("grafana", help="write Grafana provisioning for every org")
    grafana.add_argument("--config", type=Path, required=True, help="the exporter config")
    grafana.add_argument("--out", type=Path, required=True, help="directory to write to")


def _prometheus_parser(targets: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    prometheus = targets.add_parser(
        "prometheus", help="print a Prometheus config scraping N shards, with remote write"
    )
    prometheus.add_argument("--config", type=Path, required=True, help="the exporter config")
    prometheus.add_argument("--shards", type=int, default=1, help="how many shards (default 1)")
    where = prometheus.add_mutually_exclusive_group()
    where.add_argument(
        "--target-pattern",
        default="cockpit-exporter-{shard}.cockpit-exporter:9610",
        help="static target of shard {shard} (default: the StatefulSet's DNS names)",
    )
    where.add_argument("--targets", help="static targets, comma-separated, one per shard")
    where.add_argument(
        "--kubernetes-namespace", help="find the shards by Kubernetes pod discovery here"
    )
    prometheus.add_argument("--rules", help="path of cockpit.rules.yml as Prometheus sees it")
    prometheus.add_argument("--alertmanager", action="append", default=[], help="host:port")
    prometheus.add_argument(
        "--agent", action="store_true", help="for agent mode: no rules, no alerting"
    )
    prometheus.add_argument("--scrape-interval", type=duration, default=15.0, help="default 15s")
    prometheus.add_argument("--remote-write", help="backend URL; {tenant} is replaced per tenant")
    prometheus.add_argument(
        "--tenant-header", help="send each tenant's series with this header (X-Scope-OrgID)"
    )
    prometheus.add_argument(
        "--operators-tenant",
        default="cockpit-operators",
        help="backend tenant for series without a tenant (default cockpit-operators)",
    )


def _grafana_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    grafana = commands.add_parser("grafana", help="set up Grafana for the cockpit")
    actions = grafana.add_subparsers(dest="grafana_command", required=True)
    sync = actions.add_parser(
        "sync", help="create the orgs and teams that `render grafana` files refer to"
    )
    sync.add_argument("--config", type=Path, required=True, help="the exporter config")
    sync.add_argument("--url", required=True, help="Grafana's base URL")
    sync.add_argument(
        "--basic-auth-file",
        type=Path,
        help="file holding a Grafana Admin's user:password (needed to create orgs)",
    )
    sync.add_argument("--token-file", type=Path, help="file holding a token (orgs must exist)")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sync.add_argument("--record", type=Path, help="write each tenant's org id here (JSON)")
    sync.add_argument("--audit.file", dest="audit_file", type=Path,
                      help="record the changes made in this audit trail")  # fmt: skip
    sync.add_argument(
        "--wait",
        type=duration,
        default=0.0,
        help="keep asking this long while Grafana does not answer yet (e.g. 2m); default 0",
    )
    sync.add_argument(
        "--provision",
        type=Path,
        metavar="DIR",
        help="then write `render grafana` files here and have Grafana reload them",
    )


def duration(text: str) -> float:
    """Seconds of a duration flag such as 90s or 2m (a ValueError becomes a usage error)."""
    seconds = parse_duration(text)
    if seconds < 0:
        raise ValueError(text)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cockpit-exporter` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["version"]):
        sys.stdout.write(buildinfo.block())  # as written, not reflowed by argparse
        return 0
    if args in (["-h"], ["--help"]):
        args = ["run", "--help"]  # run is the default: its flags are what people look for
    if not args or (args[0] not in _COMMANDS and args[0] not in ("-h", "--help", "--version")):
        args.insert(0, "run")
    options = _parser().parse_args(args)
    if options.command in ("check-config", "render", "grafana", "import", "audit", "state"):
        return _tool(options)
    try:
        settings = _settings(options)
    except ValidationError as exc:
        return fail("\n".join(_setting_problems(exc)))
    logs.configure(settings.log_level, settings.log_format)
    if options.command == "simulate":
        return _simulate(options)
    if options.command == "demo":
        from exporter.demo import run_demo  # noqa: PLC0415 - only the demo needs its data code

        return asyncio.run(run_demo(settings, options.dir, options.simulator_port))
    return _run(settings)


def _simulate(options: argparse.Namespace) -> int:
    from exporter.simulator.main import run_simulator  # noqa: PLC0415 - as for the demo

    host, port = options.host, options.port
    if options.sim_address is not None:
        try:
            bound, port = split_address(options.sim_address)
        except ValueError as exc:
            return fail(f"--web.listen-address: {exc}")
        host = bound or "0.0.0.0"
    try:
        secrets = _client_secrets(options.client_secrets)
    except ValueError as exc:
        return fail(str(exc))
    try:
        return asyncio.run(
            run_simulator(
                tenants=options.tenants,
                seed=options.seed,
                host=host,
                port=port,
                speed=options.speed,
                warm_up=options.warm_up,
                config=options.write_config,
                client_secrets=secrets,
            )
        )
    except OSError as exc:
        return fail(str(ListenError(f"{host}:{port}", exc)))


def _client_secrets(pairs: list[str]) -> dict[str, str]:
    """`TENANT=FILE` pairs as each tenant's secret, read from its file."""
    secrets = {}
    for pair in pairs:
        tenant, sep, file = pair.partition("=")
        if not sep or not tenant or not file:
            raise ValueError(f"--client-secret {pair!r}: expected TENANT=FILE")
        secrets[tenant] = read_secret(Path(file), None, "--client-secret", tenant) or ""
    return secrets


def _tool(options: argparse.Namespace) -> int:
    """Commands that run once and exit, without the exporter's settings or logging."""
    if options.command == "check-config":
        file = options.file or options.config_file
        if file is None or (options.file and options.config_file):
            return fail("check-config: give the config file once, as FILE or --config.file FILE")
        return _check_config(file, options.connect)
    if options.command in ("audit", "state"):
        return admin_cli.run(options)
    if options.command == "import":
        from exporter.importers.command import run as convert  # noqa: PLC0415 - as for render

        return convert(options.peer, options.file)
    if options.command == "render":
        # Only rendering needs the Grafana SDK and the renderers; the exporter starts without.
        from exporter.render.cli import render  # noqa: PLC0415

        return render(options)
    from exporter.grafana.command import run  # noqa: PLC0415 - as for render

    return run(options)


def _settings(options: argparse.Namespace) -> Settings:
    flags = {k: v for k, v in vars(options).items() if k in Settings.model_fields and v is not None}
    return Settings(**flags)


def _setting_problems(exc: ValidationError) -> list[str]:
    return [
        f"setting {format_location(e['loc'])}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    ]


def _run(settings: Settings) -> int:
    if settings.config is None:
        return fail("no configuration: pass --config FILE or set COCKPIT_CONFIG")
    try:
        open_store(settings.state_dir, settings.state_mysql_dsn, settings.state_mysql_password_file)
        resolve(settings.shard, settings.total_shards)  # ShardError is a ValueError
    except ValueError as exc:
        return fail(str(exc))
    try:
        config = _load(settings.config)
        web = None
        if settings.web_config_file is not None:
            web = load_web_config(settings.web_config_file)
    except ConfigError as exc:
        return fail(str(exc))
    tune_allocator()  # before any worker thread exists
    tune_gc()
    return asyncio.run(serve(config, settings, web))


def _load(path: Path) -> Config:
    config = load_config(path)
    warn_config(config)
    return config


def _check_config(path: Path, connect: bool) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        return fail(str(exc))
    for warning in config.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    jobs = len(all_jobs(config))
    sys.stdout.write(f"{path}: OK, {len(config.tenants)} tenant(s), {jobs} job(s)\n")
    if not connect:
        return 0
    logs.configure("error", "console")  # the table says what failed; no log lines between
    from exporter.check import dry_run  # noqa: PLC0415 - only --connect needs the sources

    if asyncio.run(dry_run(config)):
        return 0
    return fail(f"{path}: some jobs failed (see the table)", EXIT_FAILED)
