"""Who may talk to the pods, and to whom they may talk: NetworkPolicies, Services, scraping."""

from __future__ import annotations

from tests.deploy.conftest import Manifests, port_number, selects

DNS_PORT, POSTGRES_PORT, REDIS_PORT = 53, 5432, 6379


def pod_labels(manifests: Manifests) -> dict[str, dict[str, str]]:
    return {name: t["metadata"]["labels"] for name, t in manifests.pod_templates()}


def policies_for(manifests: Manifests, labels: dict[str, str], kind: str) -> list[dict]:
    """The NetworkPolicies of type `kind` (Ingress or Egress) that select pods with `labels`."""
    return [
        p
        for p in manifests.of_kind("NetworkPolicy")
        if kind in p["spec"]["policyTypes"]
        and selects(p["spec"]["podSelector"]["matchLabels"], labels)
    ]


def test_every_pod_is_under_a_default_deny(manifests: Manifests) -> None:
    for workload, labels in pod_labels(manifests).items():
        denies = [
            p
            for p in policies_for(manifests, labels, "Ingress")
            if not p["spec"].get("ingress")
            and not p["spec"].get("egress")
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        ]
        assert denies, f"{workload} is not under a default-deny NetworkPolicy"


def test_pods_take_traffic_only_on_their_serving_port(manifests: Manifests) -> None:
    serving = {"orderview-api": "http", "orderview-projector": "metrics"}
    for workload, template in manifests.pod_templates():
        container = template["spec"]["containers"][0]
        allowed = {
            port_number(container, port["port"])
            for policy in policies_for(manifests, template["metadata"]["labels"], "Ingress")
            for rule in policy["spec"].get("ingress", [])
            for port in rule["ports"]
        }
        expected = {port_number(container, serving[workload])} if workload in serving else set()
        assert allowed == expected, workload
        # Every ingress rule names its ports: none is open on all of them.
        for policy in policies_for(manifests, template["metadata"]["labels"], "Ingress"):
            assert all(rule.get("ports") for rule in policy["spec"].get("ingress", []))


def test_pods_reach_only_dns_postgresql_and_redis(manifests: Manifests) -> None:
    for workload, labels in pod_labels(manifests).items():
        rules = [
            rule
            for policy in policies_for(manifests, labels, "Egress")
            for rule in policy["spec"].get("egress", [])
        ]
        assert rules, f"{workload} has no egress rule: it could not reach its database"
        ports = {port["port"] for rule in rules for port in rule["ports"]}
        assert ports == {DNS_PORT, POSTGRES_PORT, REDIS_PORT}, workload


def test_service_monitors_scrape_named_service_ports(manifests: Manifests) -> None:
    services = manifests.of_kind("Service")
    for monitor in manifests.of_kind("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        targets = [s for s in services if selects(selector, s["metadata"]["labels"])]
        assert targets, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        names = {p["name"] for s in targets for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in names
            assert endpoint["path"] == "/metrics"


def test_production_overlays_are_scraped_by_prometheus_operator(manifests: Manifests) -> None:
    monitored = {
        m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for m in manifests.of_kind("ServiceMonitor")
    }
    expected = {"api", "projector"} if manifests.overlay.startswith("production") else set()
    assert monitored == expected


def test_namespace_enforces_the_restricted_pod_security_standard(manifests: Manifests) -> None:
    [namespace] = manifests.of_kind("Namespace")
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["orderview.io/apply-phase"] == "namespace", "the README applies it first"
    for obj in manifests.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"]
