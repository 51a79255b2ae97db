"""The deploy checks' shared pieces: paths, tools from the venv, and rendered overlays."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = sorted(
    path.name
    for path in (KUBERNETES / "overlays").iterdir()
    if (path / "kustomization.yaml").is_file()
)
# kubernetes-validate bundles the OpenAPI schemas of each release; this is the newest it has.
KUBERNETES_VERSION = "1.37.0"
KEDA_VERSION = "2.18"
KEDA_SCHEMA = KUBERNETES / "schemas" / f"keda-{KEDA_VERSION}" / "scaledobject_v1alpha1.json"
# The openAPIV3Schema of prometheus-operator's PrometheusRule CRD (example/prometheus-operator-crd).
PROMETHEUS_RULE_SCHEMA = (
    KUBERNETES / "schemas" / "prometheus-operator-0.93" / "prometheusrule_v1.json"
)

Manifest = dict[str, Any]


def tool(name: str) -> str:
    """A console script installed beside this interpreter (the test extra), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; never raises on a non-zero exit."""
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


@functools.cache
def render_text(overlay: str) -> str:
    """`kubectl kustomize` of one overlay, as YAML text."""
    done = run(tool("kubectl"), "kustomize", str(KUBERNETES / "overlays" / overlay))
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return done.stdout


class Manifests:
    """The objects one overlay renders to, with look-ups by kind and name."""

    def __init__(self, overlay: str, objects: list[Manifest]) -> None:
        self.overlay = overlay
        self.objects = objects

    def of_kind(self, kind: str) -> list[Manifest]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str) -> Manifest:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def config(self) -> dict[str, str]:
        """The data of the one orderview ConfigMap (its name carries a hash suffix)."""
        maps = [
            m
            for m in self.of_kind("ConfigMap")
            if m["metadata"]["name"].startswith("orderview-config")
        ]
        assert len(maps) == 1, f"{self.overlay}: expected one orderview-config ConfigMap"
        return maps[0]["data"]

    def streams(self) -> list[str]:
        return [s.strip() for s in self.config()["ORDERVIEW_STREAMS"].split(",") if s.strip()]

    def pod_templates(self) -> Iterator[tuple[str, Manifest]]:
        """(workload name, pod template) of every Deployment and Job."""
        for obj in self.of_kind("Deployment") + self.of_kind("Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]

    def container(self, deployment: str) -> Manifest:
        containers = self.one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1, f"{deployment} should run one container"
        return containers[0]


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    """The rendered objects of each overlay in turn."""
    objects = [obj for obj in yaml.safe_load_all(render_text(request.param)) if obj]
    return Manifests(request.param, objects)


def env_of(container: Manifest) -> dict[str, Manifest]:
    """A container's env entries by name."""
    return {entry["name"]: entry for entry in container.get("env", [])}


def port_number(container: Manifest, port: int | str) -> int:
    """A probe's or Service's port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    named = {p["name"]: p["containerPort"] for p in container.get("ports", []) if "name" in p}
    assert port in named, f"port {port!r} is not a named port of container {container['name']}"
    return named[port]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether matchLabels `selector` matches `labels`."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
