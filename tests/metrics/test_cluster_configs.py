"""Deployment configs: YAML parses, promtool accepts Prometheus', KubeRay manifests carry no secret."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from relay_actors.metrics import DEFAULT_METRICS_PORT

from .promserver import PROMTOOL, REPO

CLUSTER = REPO / "cluster"
YAMLS = sorted([*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")])


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CLUSTER)))
def test_yaml_parses(path: Path) -> None:
    assert load_all(path)


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package 'prometheus')")
def test_promtool_accepts_config_and_rules() -> None:
    for args in (
        ["check", "config", str(CLUSTER / "prometheus" / "prometheus.yml")],
        ["check", "rules", str(CLUSTER / "prometheus" / "relay_rules.yml")],
    ):
        done = subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


def ports_of(group: dict) -> dict[str, int]:
    containers = group["template"]["spec"]["containers"]
    return {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}


def test_prometheus_scrapes_the_app_endpoint_and_ray_agents() -> None:
    (config,) = load_all(CLUSTER / "prometheus" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["relay"]["static_configs"][0]["targets"] == [f"127.0.0.1:{DEFAULT_METRICS_PORT}"]
    assert jobs["ray"]["file_sd_configs"]
    # The VM head binds the endpoint on loopback, where that Prometheus scrapes it.
    assert "RELAY_METRICS_HOST=127.0.0.1" in (CLUSTER / "vm" / "ray-cluster.yaml").read_text()
    (monitor,) = load_all(CLUSTER / "kuberay" / "podmonitor.yaml")
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["relay-metrics", "metrics"]


def _groups(spec: dict) -> tuple[dict, list[dict]]:
    return spec["headGroupSpec"], spec["workerGroupSpecs"]


def test_kuberay_relay_calls_group_and_no_secret_in_runtime_env() -> None:
    (cluster,) = load_all(CLUSTER / "kuberay" / "raycluster.yaml")
    (job,) = load_all(CLUSTER / "kuberay" / "rayjob.yaml")
    for spec in (cluster["spec"], job["spec"]["rayClusterSpec"]):
        head, workers = _groups(spec)
        (calls,) = [w for w in workers if w["groupName"] == "relay-calls"]
        resources = calls["rayStartParams"]["resources"]
        assert json.loads(json.loads(resources)) == {"relay_calls": 1}
        for group in (head, *workers):
            ports = {
                p["name"]: p["containerPort"]
                for c in group["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            assert ports.get("metrics") == 8080  # Ray's agent
        # The app's own endpoint: its router, on the head.
        assert ports_of(head).get("relay-metrics") == DEFAULT_METRICS_PORT
        assert all("relay-metrics" not in ports_of(w) for w in workers)
    runtime_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert not any("SIGNALWIRE" in k or "TOKEN" in k for k in runtime_env.get("env_vars", {}))
    head, workers = _groups(job["spec"]["rayClusterSpec"])
    (container,) = head["template"]["spec"]["containers"]
    # The Secret is a file on the head only, named by SIGNALWIRE_CREDENTIALS_FILE (not envFrom:
    # every Ray process on the head would inherit it).
    assert "envFrom" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    (mount,) = container["volumeMounts"]
    assert env["SIGNALWIRE_CREDENTIALS_FILE"].startswith(mount["mountPath"] + "/")
    (volume,) = head["template"]["spec"]["volumes"]
    assert volume["name"] == mount["name"] and volume["secret"]["secretName"] == "signalwire-relay"
    for w in workers:
        for c in w["template"]["spec"]["containers"]:
            assert "envFrom" not in c and "SIGNALWIRE" not in json.dumps(c.get("env", []))
    assert job["spec"]["entrypoint"].startswith("relay-actors run examples.ivr.app:client --ray")
    assert f"--metrics-port {DEFAULT_METRICS_PORT}" in job["spec"]["entrypoint"]
    assert (REPO / "examples" / "ivr" / "app.py").exists()


def test_vm_cluster_has_relay_calls_worker_group() -> None:
    (config,) = load_all(CLUSTER / "vm" / "ray-cluster.yaml")
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    assert any(t["resources"].get("relay_calls") == 1 for name, t in types.items() if "head" not in name)
    text = (CLUSTER / "vm" / "ray-cluster.yaml").read_text()
    assert "SIGNALWIRE_API_TOKEN" not in text


def test_grafana_provisioning_points_at_the_generated_dashboards() -> None:
    (provider,) = load_all(CLUSTER / "grafana" / "provisioning" / "dashboards" / "relay.yaml")
    assert provider["providers"][0]["options"]["path"].endswith("relay-actors")
    (ds,) = load_all(CLUSTER / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    assert ds["datasources"][0]["type"] == "prometheus"
    readme = (CLUSTER / "README.md").read_text()
    assert "dashboards/grafana" in readme and "Secret" in readme
