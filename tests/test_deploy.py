"""The deployment files in deploy/ and the Dockerfile agree with the code and with each other.

Neither a Docker engine nor a cluster runs here, so these files are not started by the suite
(``tests/test_topology.py`` runs the same topology as local processes). What can drift
silently is checked instead: timeouts that must nest, routes and settings they name, and
the pool sizes docs/scaling.md asks for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.main import create_app
from app.settings import Settings
from bench import pooler
from tests.support import DEPLOY

ROOT = DEPLOY.parent


def _documents(path: Path) -> dict[str, Any]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text())}


def _graceful_timeout() -> float:
    """The drain time the image runs with (``--graceful-timeout`` in the Dockerfile's CMD)."""
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd is not None
    args = yaml.safe_load(cmd.group(1))
    return float(args[args.index("--graceful-timeout") + 1])


@pytest.fixture(scope="module")
def k8s() -> dict[str, Any]:
    return _documents(DEPLOY / "k8s" / "rowstream.yaml")


def _container(k8s: dict[str, Any]) -> dict[str, Any]:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def test_the_grace_period_covers_the_prestop_sleep_and_the_drain(k8s: dict[str, Any]) -> None:
    pod = k8s["Deployment"]["spec"]["template"]["spec"]
    command = " ".join(_container(k8s)["lifecycle"]["preStop"]["exec"]["command"])
    sleep = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", command).group(1))  # type: ignore[union-attr]
    assert pod["terminationGracePeriodSeconds"] > sleep + _graceful_timeout()


def test_probes_and_metrics_name_routes_the_app_serves(k8s: dict[str, Any]) -> None:
    paths = set(create_app(Settings()).openapi()["paths"])
    container = _container(k8s)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    assert (
        k8s["Deployment"]["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        in paths
    )


def test_the_hpa_scales_on_streams_in_flight_below_the_capacity(k8s: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value") for e in _container(k8s)["env"]}
    settings = Settings()
    assert {"DATABASE_URL", "DATABASE_READ_URL", "DATABASE_POOLER", "JWT_SECRET"} <= set(env)
    assert "LINK_SECRET" in env  # every pod checks the parts any pod signed
    assert all(name.lower() in Settings.model_fields for name in env)
    (pods,) = [m["pods"] for m in k8s["HorizontalPodAutoscaler"]["spec"]["metrics"] if "pods" in m]
    assert pods["metric"]["name"] == "rowstream_streams_active"
    capacity = int(env.get("STREAM_CAPACITY") or settings.stream_capacity)
    assert 0 < float(pods["target"]["averageValue"]) < capacity
    # scaling in ends a pod's partition holds: slowly, one pod at a time
    down = k8s["HorizontalPodAutoscaler"]["spec"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300 and down["policies"][0]["value"] == 1


def test_the_compose_pgbouncer_covers_its_instances_and_relays_in_large_buffers() -> None:
    services = yaml.safe_load((DEPLOY / "compose.scale.yml").read_text())["services"]
    bouncer = services["pgbouncer"]["environment"]
    for key, value in pooler.RECOMMENDED.items():  # pool_mode, pkt_buf, pool sizes, waits
        assert str(bouncer[key.upper()]) == value, key
    instances = [s for s in services.values() if "DATABASE_POOLER" in s.get("environment", {})]
    assert len(instances) == 2
    for instance in instances:
        assert instance["environment"]["DATABASE_POOLER"] == "transaction"
    # each logical database (primary, replica) has its own pool of DEFAULT_POOL_SIZE
    needed = sum(int(s["environment"]["POOL_MAX_SIZE"]) for s in instances)
    assert int(bouncer["DEFAULT_POOL_SIZE"]) >= needed
    # and rowstream's drain fits in the time compose gives it before SIGKILL
    grace = float(instances[0]["stop_grace_period"].removesuffix("s"))
    assert grace > _graceful_timeout()


def test_the_compose_nginx_balances_on_connections_and_does_not_buffer() -> None:
    site = (DEPLOY / "nginx.compose.conf").read_text()
    for directive in ("least_conn;", "proxy_http_version 1.1;", "proxy_buffering off;"):
        assert directive in site
    services = yaml.safe_load((DEPLOY / "compose.scale.yml").read_text())["services"]
    upstreams = set(re.findall(r"server (\w+):8000;", site))
    assert upstreams == {"api1", "api2"} and upstreams <= set(services)
