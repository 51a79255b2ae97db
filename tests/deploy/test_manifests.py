"""The rendered manifests keep the promises of the Deploying section, in every overlay."""

from __future__ import annotations

import re

import pytest

from orderview.settings import PREFIX, Settings, load_settings
from services.api.server import GRACEFUL_SECONDS as API_DRAIN_SECONDS
from tests.deploy.conftest import Manifests, env_of, port_number, selects

API, PROJECTOR, MIGRATE = "orderview-api", "orderview-projector", "orderview-migrate"
API_PORT = 8000
# name:tag, name@sha256:..., or both; the registry's own :port is not a tag.
PINNED_IMAGE = re.compile(r"[^@]*:[\w][\w.-]*(@sha256:[0-9a-f]{64})?|[^@]+@sha256:[0-9a-f]{64}")
SECRET_SETTINGS = {
    "ORDERVIEW_DATABASE_URL",
    "ORDERVIEW_READ_DATABASE_URL",
    "ORDERVIEW_REDIS_URL",
    "ORDERVIEW_CURSOR_SECRET",
}


def probe_port(container: dict, probe: dict) -> int:
    action = probe.get("httpGet") or probe.get("tcpSocket")
    assert action, f"{container['name']}: probe is neither httpGet nor tcpSocket"
    return port_number(container, action["port"])


# ---- settings ----------------------------------------------------------------------------------


def test_configmap_holds_only_known_settings_that_parse(manifests: Manifests) -> None:
    config = manifests.config()
    known = {PREFIX + field.upper() for field in Settings.__struct_fields__}
    assert set(config) <= known, f"unknown settings: {set(config) - known}"
    load_settings(config)


def test_secret_settings_come_from_secret_references_only(manifests: Manifests) -> None:
    assert not manifests.of_kind("Secret"), "no Secret objects (and so no values) are committed"
    assert not SECRET_SETTINGS & set(manifests.config())
    for workload, template in manifests.pod_templates():
        for container in template["spec"]["containers"]:
            for name, entry in env_of(container).items():
                if name in SECRET_SETTINGS:
                    assert "value" not in entry, f"{workload}: {name} has a literal value"
                    assert "secretKeyRef" in entry["valueFrom"], f"{workload}: {name}"


# ---- API ---------------------------------------------------------------------------------------


def test_api_serves_on_all_interfaces_at_its_port(manifests: Manifests) -> None:
    container = manifests.container(API)
    args = container["args"]
    assert args[0] == "api"
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert int(args[args.index("--port") + 1]) == API_PORT
    assert port_number(container, "http") == API_PORT


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        pytest.param("livenessProbe", "/health/live", id="liveness"),
        pytest.param("readinessProbe", "/health/ready", id="readiness"),
        pytest.param("startupProbe", "/health/live", id="startup"),
    ],
)
def test_api_probes_ask_the_health_paths_on_the_api_port(
    manifests: Manifests, probe: str, path: str
) -> None:
    container = manifests.container(API)
    assert container[probe]["httpGet"]["path"] == path
    assert probe_port(container, container[probe]) == API_PORT


def test_api_runs_at_least_two_replicas_scaled_on_cpu(manifests: Manifests) -> None:
    assert manifests.one("Deployment", API)["spec"].get("replicas", 1) >= 2
    hpa = manifests.one("HorizontalPodAutoscaler", API)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": API,
    }
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]


def test_api_pauses_before_sigterm_and_has_time_to_drain(manifests: Manifests) -> None:
    pod = manifests.one("Deployment", API)["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pause = int(command[1])
    assert pause >= 5
    assert pod["terminationGracePeriodSeconds"] > pause + API_DRAIN_SECONDS


def test_api_service_sends_traffic_to_the_api_port(manifests: Manifests) -> None:
    service = manifests.one("Service", API)
    pod = manifests.one("Deployment", API)["spec"]["template"]
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    [port] = service["spec"]["ports"]
    assert port["name"] == "http"
    assert port_number(pod["spec"]["containers"][0], port["targetPort"]) == API_PORT


# ---- projector ---------------------------------------------------------------------------------


def test_projector_probes_use_its_metrics_port(manifests: Manifests) -> None:
    container = manifests.container(PROJECTOR)
    metrics_port = int(manifests.config()["ORDERVIEW_METRICS_PORT"])
    assert port_number(container, "metrics") == metrics_port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe_port(container, container[probe]) == metrics_port, probe
        if "httpGet" in container[probe]:
            assert container[probe]["httpGet"]["path"] == "/metrics", probe


def test_projector_consumer_is_named_after_its_pod(manifests: Manifests) -> None:
    container = manifests.container(PROJECTOR)
    assert container["args"] == ["projector"]
    entry = env_of(container)["ORDERVIEW_CONSUMER_NAME"]
    assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_projector_finishes_its_batch_before_it_is_killed(manifests: Manifests) -> None:
    pod = manifests.one("Deployment", PROJECTOR)["spec"]["template"]["spec"]
    block_seconds = int(manifests.config()["ORDERVIEW_BLOCK_MS"]) / 1000
    assert pod["terminationGracePeriodSeconds"] >= 30 + block_seconds


def projector_scalers(manifests: Manifests) -> list[tuple[int, int]]:
    """(min, max) of every KEDA ScaledObject or HPA that scales the projector."""
    found = [
        (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"])
        for so in manifests.of_kind("ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == PROJECTOR
    ]
    found += [
        (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
        for hpa in manifests.of_kind("HorizontalPodAutoscaler")
        if hpa["spec"]["scaleTargetRef"]["name"] == PROJECTOR
    ]
    return found


def test_projector_scales_from_one_to_the_number_of_shards(manifests: Manifests) -> None:
    assert projector_scalers(manifests) == [(1, len(manifests.streams()))]
    assert "replicas" not in manifests.one("Deployment", PROJECTOR)["spec"], "the scaler owns it"


def test_keda_triggers_watch_the_projectors_streams_and_group(manifests: Manifests) -> None:
    config = manifests.config()
    container = manifests.container(PROJECTOR)
    for scaled in manifests.of_kind("ScaledObject"):
        spec = scaled["spec"]
        assert spec["scaleTargetRef"]["envSourceContainerName"] == container["name"]
        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"redis-streams"}
        assert sorted(t["metadata"]["stream"] for t in triggers) == sorted(manifests.streams())
        for trigger in triggers:
            metadata = trigger["metadata"]
            assert metadata["consumerGroup"] == config["ORDERVIEW_CONSUMER_GROUP"]
            assert "lagCount" in metadata or "pendingEntriesCount" in metadata
            assert metadata["addressFromEnv"] in env_of(container)


def test_production_scales_the_projector_with_keda(manifests: Manifests) -> None:
    keda = {"production": "ScaledObject", "production-rebuild": "ScaledObject"}
    expected = keda.get(manifests.overlay, "HorizontalPodAutoscaler")
    scalers = [
        obj["kind"]
        for obj in manifests.of_kind("ScaledObject") + manifests.of_kind("HorizontalPodAutoscaler")
        if obj["spec"]["scaleTargetRef"]["name"] == PROJECTOR
    ]
    assert scalers == [expected]


# ---- every workload ----------------------------------------------------------------------------


def test_every_pod_runs_as_non_root_on_a_read_only_root(manifests: Manifests) -> None:
    for workload, template in manifests.pod_templates():
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, workload
        assert pod["securityContext"]["runAsUser"] > 0, workload
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert pod["automountServiceAccountToken"] is False, workload
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, workload
            assert security["allowPrivilegeEscalation"] is False, workload
            assert security["capabilities"]["drop"] == ["ALL"], workload


def test_every_container_has_requests_and_limits(manifests: Manifests) -> None:
    for workload, template in manifests.pod_templates():
        for container in template["spec"]["containers"]:
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) >= {"cpu", "memory"}, f"{workload} {bound}"


def test_every_image_is_pinned_to_a_version(manifests: Manifests) -> None:
    for workload, template in manifests.pod_templates():
        for container in template["spec"]["containers"]:
            image = container["image"]
            assert PINNED_IMAGE.fullmatch(image), f"{workload}: {image} names no tag or digest"
            assert not image.endswith(":latest"), f"{workload}: {image}"


def test_deployments_roll_without_losing_a_ready_pod(manifests: Manifests) -> None:
    for deployment in manifests.of_kind("Deployment"):
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate"
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0
        assert strategy["rollingUpdate"]["maxSurge"] >= 1


def test_deployments_spread_their_pods_across_nodes(manifests: Manifests) -> None:
    for deployment in manifests.of_kind("Deployment"):
        template = deployment["spec"]["template"]
        spread = {
            c["topologyKey"]: c
            for c in template["spec"]["topologySpreadConstraints"]
            if selects(c["labelSelector"]["matchLabels"], template["metadata"]["labels"])
        }
        assert "kubernetes.io/hostname" in spread, deployment["metadata"]["name"]


def test_every_deployment_has_a_disruption_budget(manifests: Manifests) -> None:
    budgets = manifests.of_kind("PodDisruptionBudget")
    assert {b["apiVersion"] for b in budgets} == {"policy/v1"}
    for deployment in manifests.of_kind("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if selects(b["spec"]["selector"]["matchLabels"], labels)]
        assert len(matching) == 1, deployment["metadata"]["name"]


def test_migrations_run_as_a_job_applied_in_the_first_phase(manifests: Manifests) -> None:
    job = manifests.one("Job", MIGRATE)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["migrate"]
    phase = {"orderview.io/apply-phase": "migrate"}
    needed = [job, manifests.one("ServiceAccount", pod["serviceAccountName"])]
    needed += [
        m
        for m in manifests.of_kind("ConfigMap")
        if m["metadata"]["name"].startswith("orderview-config")
    ]
    for obj in needed:
        assert selects(phase, obj["metadata"]["labels"]), obj["metadata"]["name"]


def test_a_rebuild_is_a_job_of_its_own_overlay_never_part_of_a_deploy(manifests: Manifests) -> None:
    jobs = {j["metadata"]["name"]: j for j in manifests.of_kind("Job")}
    if not manifests.overlay.endswith("-rebuild"):
        assert "orderview-rebuild" not in jobs
        return
    job = jobs["orderview-rebuild"]
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["args"] == ["rebuild", "--yes"]
    assert pod["restartPolicy"] == "Never" and job["metadata"]["namespace"] == "orderview"
    assert selects({"orderview.io/apply-phase": "rebuild"}, job["metadata"]["labels"])
    config = pod["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    assert config in {m["metadata"]["name"] for m in manifests.of_kind("ConfigMap")}
    limit = pod["containers"][0]["resources"]["limits"]["memory"]
    assert limit == "512Mi"  # the rebuild's peak RSS target is 300 MB (benchmarks/rebuild.py)
