"""deploy/kubernetes agrees with the exporter: flags, ports, paths, user, labels, secrets."""

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from exporter import __version__
from exporter.cli import _parser
from exporter.config import load_config
from exporter.settings import split_address

ROOT = Path(__file__).parent.parent
KUBE = ROOT / "deploy" / "kubernetes"


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    """Every resource the kustomization lists, by kind."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return {
        document["kind"]: document
        for name in kustomization["resources"]
        for document in yaml.safe_load_all((KUBE / name).read_text())
    }


def container(manifests: dict[str, dict]) -> dict:
    (only,) = manifests["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return only


def options(manifests: dict[str, dict]):
    return _parser().parse_args(["run", *container(manifests)["args"]])


def mounts(manifests: dict[str, dict]) -> dict[str, str]:
    """Volume name -> mount path in the exporter container."""
    return {m["name"]: m["mountPath"] for m in container(manifests)["volumeMounts"]}


def test_one_shard_per_pod_and_the_flags_parse(manifests: dict[str, dict]) -> None:
    """The args parse with the exporter's own parser; --shard auto with --total-shards equal
    to the replicas; the listen port is the container's `metrics` port, the Service's and
    the ServiceMonitor's."""
    spec = manifests["StatefulSet"]["spec"]
    opts = options(manifests)
    assert opts.shard == "auto" and opts.total_shards == spec["replicas"]
    port = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}["metrics"]
    assert split_address(opts.listen_address)[1] == port
    service = manifests["Service"]["spec"]
    assert (
        service["clusterIP"] == "None"
        and spec["serviceName"] == manifests["Service"]["metadata"]["name"]
    )
    assert service["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics"}]
    (endpoint,) = manifests["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"


def test_probes_config_state_and_secrets_are_where_the_exporter_looks(
    manifests: dict[str, dict],
) -> None:
    """Liveness /healthz and readiness /readyz; the config file is the ConfigMap's key, the
    state dir the per-pod volume, and every secret file the config names is in the Secret's
    mount; the config itself is valid."""
    c, opts = container(manifests), options(manifests)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    paths = mounts(manifests)
    assert str(opts.config.parent) == paths["config"] and opts.config.name == "config.yaml"
    claims = [
        t["metadata"]["name"] for t in manifests["StatefulSet"]["spec"]["volumeClaimTemplates"]
    ]
    assert claims == ["state"] and str(opts.state_dir) == paths["state"]
    config = load_config(KUBE / "config.yaml", secrets=False)
    text = (KUBE / "config.yaml").read_text()
    files = [
        line.split("_file: ")[1].split("}")[0].strip()
        for line in text.splitlines()
        if "_file: " in line
    ]
    assert files and all(f.startswith(paths["secrets"] + "/") for f in files), files
    assert config.tenants == ("acme", "globex")
    grace = int(
        manifests["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
    assert grace > float(opts.shutdown_grace_period.rstrip("s"))


def test_non_root_read_only_with_requests(manifests: dict[str, dict]) -> None:
    """The image's numeric user, no privilege escalation, read-only root, every capability
    dropped; CPU and memory requests and a memory limit; at most one shard disrupted."""
    pod = manifests["StatefulSet"]["spec"]["template"]["spec"]
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
    user = next(line.split()[1] for line in dockerfile if line.startswith("USER "))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == user
    context = container(manifests)["securityContext"]
    assert context == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                       "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    resources = container(manifests)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"} and "memory" in resources["limits"]
    assert manifests["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_labels_select_the_pods_and_the_scrape_job_is_the_rules(
    manifests: dict[str, dict],
) -> None:
    """Service, PDB and ServiceMonitor select the pods' label; the ServiceMonitor names the
    job the rules watch and leaves only labels the rules aggregate away between replicas."""
    from exporter.alertrules import RuleSettings

    pod_labels = manifests["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    for kind, selector in (
        ("Service", manifests["Service"]["spec"]["selector"]),
        (
            "PodDisruptionBudget",
            manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        ),
        ("ServiceMonitor", manifests["ServiceMonitor"]["spec"]["selector"]["matchLabels"]),
    ):
        assert selector.items() <= pod_labels.items(), kind
    relabel = manifests["ServiceMonitor"]["spec"]["endpoints"][0]["relabelings"]
    job = next(r for r in relabel if r.get("targetLabel") == "job")
    assert job["replacement"] == RuleSettings().scrape_job
    added = {r["targetLabel"] for r in relabel if "targetLabel" in r} - {"job", "shard"}
    assert added <= set(RuleSettings().replica_labels)
    assert "labeldrop" in {r.get("action") for r in relabel}


def test_kustomize_builds_it(manifests: dict[str, dict]) -> None:
    """`kubectl kustomize`: the namespace on everything, the config as a hashed ConfigMap the
    pods mount, the image tag this version."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl missing: `make test` installs Debian's kubernetes-client"
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "deprecated" not in result.stderr.lower(), result.stderr  # no commonLabels & co.
    built = {d["kind"]: d for d in yaml.safe_load_all(result.stdout)}
    selector = built["StatefulSet"]["spec"]["selector"]["matchLabels"]
    assert selector["app.kubernetes.io/name"] == "cockpit-exporter"  # the labels select too
    assert set(built) == {"ConfigMap", *manifests}
    assert {d["metadata"]["namespace"] for d in built.values()} == {"cockpit"}
    config_map = built["ConfigMap"]["metadata"]["name"]
    volumes = built["StatefulSet"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": config_map}} in volumes
    assert config_map.startswith("cockpit-exporter-config-")
    image = built["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]["image"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert image == f"cockpit-exporter:{version}" and __version__ in (version, "0.0.0")


def test_render_prometheus_finds_these_pods(manifests: dict[str, dict]) -> None:
    """The Kubernetes variant of `render prometheus` keeps exactly these pods and port, in
    the kustomization's namespace."""
    from exporter.render.prometheus import (
        APP_LABEL,
        PORT_NAME,
        Topology,
        literal,
        render_prometheus,
    )

    namespace = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["namespace"]
    config = load_config(KUBE / "config.yaml", secrets=False)
    topology = Topology(shards=4, kubernetes_namespace=namespace)
    (job,) = render_prometheus(config, topology)["scrape_configs"]
    keep = {
        r["source_labels"][0]: r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    pod_labels = manifests["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert keep[APP_LABEL] == literal(pod_labels["app.kubernetes.io/name"])
    assert keep[PORT_NAME] == container(manifests)["ports"][0]["name"]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [namespace]
