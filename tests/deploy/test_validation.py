"""Every overlay renders and validates offline: Kubernetes schemas strictly, KEDA against its schema."""

from __future__ import annotations

import json

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import (
    KEDA_SCHEMA,
    KUBERNETES,
    KUBERNETES_VERSION,
    OVERLAYS,
    Manifests,
    render_text,
    run,
    tool,
)

# Custom resources kubernetes-validate has no schema for, and what checks them instead.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # tests/deploy/test_alerts.py
}


def keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_there_are_the_overlays_the_readme_names() -> None:
    assert set(OVERLAYS) >= {"dev", "production", "production-hpa"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_kubernetes_validation(overlay: str, tmp_path) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render_text(overlay))
    done = run(
        tool("kubernetes-validate"),
        "--strict",
        "-k",
        KUBERNETES_VERSION,
        "--no-warn",
        str(rendered),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout


def test_every_object_is_core_or_a_custom_resource_checked_here(manifests: Manifests) -> None:
    for obj in manifests.objects:
        kind = (obj["apiVersion"], obj["kind"])
        if kind in CUSTOM_KINDS:
            continue
        # Raises SchemaNotFoundError for a kind neither Kubernetes nor this suite knows.
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_scaled_objects_match_the_keda_schema(manifests: Manifests) -> None:
    validator = keda_validator()
    for scaled in manifests.of_kind("ScaledObject"):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(scaled)]
        assert not errors, "\n".join(errors)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "x", "image": "x:1", "readinessProbes": {}}]},
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda so: so["spec"].update(maxReplicas=4), id="misspelt-spec-field"),
        pytest.param(
            lambda so: so["spec"]["triggers"][0]["metadata"].update(consumergroup="x"),
            id="misspelt-trigger-parameter",
        ),
        pytest.param(
            lambda so: so["spec"]["triggers"][0]["metadata"].update(lagCount=1000),
            id="number-not-string",
        ),
        pytest.param(
            lambda so: so["spec"]["triggers"][0]["metadata"].pop("stream"), id="no-stream"
        ),
    ],
)
def test_keda_schema_rejects_a_broken_scaled_object(mutate) -> None:
    scaled = keda_scaled_object()
    mutate(scaled)
    assert list(keda_validator().iter_errors(scaled))


def keda_scaled_object() -> dict:
    text = (KUBERNETES / "components" / "keda" / "scaledobject.yaml").read_text()
    return yaml.safe_load(text)


def test_the_components_own_scaled_object_matches_the_schema() -> None:
    assert not list(keda_validator().iter_errors(keda_scaled_object()))
