"""A Prometheus configuration for N exporter shards, optionally remote-writing per tenant.

Targets are either static (one per shard) or found by Kubernetes pod discovery (the
StatefulSet of deploy/kubernetes/), each labelled with its `shard`; under Kubernetes the pod
name becomes the `replica` label the rules aggregate away (alerting.replica_labels). With a
remote-write backend and a tenant header (Mimir, Cortex: X-Scope-OrgID) or a `{tenant}` in
the URL (VictoriaMetrics cluster: /insert/{tenant}/...), each tenant's series go in a block of
their own to that tenant's backend tenant, kept by `write_relabel_configs`; series without a
tenant (the exporter's own, `up`) and those of tenants not in the config go to the
operators' tenant, so nothing is lost between a tenant's discovery and a re-render.
"""

import re
from dataclasses import dataclass
from typing import Any

from exporter.alertrules import RuleSettings
from exporter.config import Config

POD_NAME = "__meta_kubernetes_pod_name"
APP_LABEL = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
PORT_NAME = "__meta_kubernetes_pod_container_port_name"


@dataclass(frozen=True)
class Topology:
    """Where the shards are and where the series go."""

    shards: int
    targets: tuple[str, ...] = ()  # static: one per shard, in shard order
    kubernetes_namespace: str | None = None  # instead of targets: pod discovery
    app: str = "cockpit-exporter"
    rules: str = "/etc/prometheus/rules/cockpit.rules.yml"
    alertmanagers: tuple[str, ...] = ()
    agent: bool = False  # agent mode: no rules, no alerting, remote write only
    remote_write: str | None = None
    tenant_header: str | None = None
    operators_tenant: str = "cockpit-operators"
    scrape_interval: float = 15.0


def render_prometheus(config: Config, topology: Topology) -> dict[str, Any]:
    """The prometheus.yml document."""
    settings = config.alerting or RuleSettings()
    document: dict[str, Any] = {
        "global": {
            "scrape_interval": f"{topology.scrape_interval:g}s",
            "evaluation_interval": "1m",
        }
    }
    if not topology.agent:
        document["rule_files"] = [topology.rules]
        if topology.alertmanagers:
            targets = list(topology.alertmanagers)
            document["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    document["scrape_configs"] = [_scrape(settings.scrape_job, topology)]
    if topology.remote_write is not None:
        document["remote_write"] = remote_write(config.tenants, topology)
    return document


def literal(text: str) -> str:
    """`text` as an RE2 pattern matching itself (readable: only metacharacters escaped)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)


def _scrape(job: str, topology: Topology) -> dict[str, Any]:
    if topology.kubernetes_namespace is None:
        return {
            "job_name": job,
            "static_configs": [
                {"targets": [target], "labels": {"shard": str(shard)}}
                for shard, target in enumerate(topology.targets)
            ],
        }
    return {
        "job_name": job,
        "kubernetes_sd_configs": [
            {"role": "pod", "namespaces": {"names": [topology.kubernetes_namespace]}}
        ],
        "relabel_configs": [
            {"source_labels": [APP_LABEL], "regex": literal(topology.app), "action": "keep"},
            {"source_labels": [PORT_NAME], "regex": "metrics", "action": "keep"},
            # A StatefulSet pod NAME-I runs shard I (`--shard auto`).
            {"source_labels": [POD_NAME], "regex": ".*-([0-9]+)", "target_label": "shard"},
            {"source_labels": [POD_NAME], "target_label": "replica"},
        ],
    }


def remote_write(tenants: tuple[str, ...], topology: Topology) -> list[dict[str, Any]]:
    """One block for everything, or one per tenant plus the operators' block."""
    url = topology.remote_write
    assert url is not None
    if topology.tenant_header is None and "{tenant}" not in url:
        return [{"name": "cockpit", "url": url}]
    if topology.operators_tenant in tenants:
        raise ValueError(
            f"--operators-tenant {topology.operators_tenant!r} is also a tenant's id: its series"
            " would mix with the operators'"
        )
    blocks = [
        _block(f"tenant-{tenant}", tenant, topology, "keep", [literal(tenant)])
        for tenant in tenants
    ]
    # Everything the blocks above do not take: no tenant label, or a tenant not listed.
    listed = [literal(tenant) for tenant in tenants]
    blocks.append(_block("operators", topology.operators_tenant, topology, "drop", listed))
    return blocks


def _block(
    name: str, backend_tenant: str, topology: Topology, action: str, tenants: list[str]
) -> dict[str, Any]:
    assert topology.remote_write is not None
    block: dict[str, Any] = {
        "name": name,
        "url": topology.remote_write.replace("{tenant}", backend_tenant),
    }
    if topology.tenant_header is not None:
        block["headers"] = {topology.tenant_header: backend_tenant}
    if tenants:
        # Anchored by Prometheus: a tenant id matches itself, not a longer id.
        block["write_relabel_configs"] = [
            {"source_labels": ["tenant"], "regex": "|".join(tenants), "action": action}
        ]
    return block


def prometheus_topology(options: Any) -> Topology:
    """The Topology from `render prometheus` flags; ValueError names a bad one."""
    if options.shards < 1:
        raise ValueError(f"--shards {options.shards}: at least 1")
    if options.scrape_interval < 1:
        raise ValueError(f"--scrape-interval {options.scrape_interval:g}s: at least 1s")
    targets: tuple[str, ...] = ()
    if options.kubernetes_namespace is None:
        if options.targets:
            targets = tuple(t.strip() for t in options.targets.split(","))
        else:
            targets = tuple(
                options.target_pattern.replace("{shard}", str(i)) for i in range(options.shards)
            )
        if len(targets) != options.shards:
            raise ValueError(f"--targets: {len(targets)} given for {options.shards} shards")
    header = options.tenant_header
    if header is not None and not re.fullmatch(r"[A-Za-z0-9-]+", header):
        raise ValueError(f"--tenant-header {header!r}: a header name such as X-Scope-OrgID")
    if header is not None and options.remote_write is None:
        raise ValueError("--tenant-header needs --remote-write")
    return Topology(
        shards=options.shards,
        targets=targets,
        kubernetes_namespace=options.kubernetes_namespace,
        rules=options.rules or Topology.rules,
        alertmanagers=tuple(options.alertmanager),
        agent=options.agent,
        remote_write=options.remote_write,
        tenant_header=header,
        operators_tenant=options.operators_tenant,
        scrape_interval=options.scrape_interval,
    )
