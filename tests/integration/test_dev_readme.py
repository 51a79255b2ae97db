"""The README's two commands, read out of its first code block, run literally in a fresh clone.

Slow (a fresh venv, a pip install). The second command runs pytest inside the clone; this test
passes it `PYTEST_ADDOPTS=-m "smoke and not slow"` and `ORDERVIEW_TEST_EMBEDDED=1`, so the inner
run is the small smoke subset on embedded servers, as on a machine with nothing installed, and
never runs this test again (it is `slow`, not `smoke`; `ORDERVIEW_README_RUN` guards it as well).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_dev import (
    ROOT,
    DevRun,
    assert_nothing_left,
    check_both_dialects,
    dev_env,
)

INSTALL_TIMEOUT = 900.0
INNER_OPTIONS = '-m "smoke and not slow" -p no:cacheprovider'


def readme_commands(readme: Path) -> list[str]:
    """The lines of the first fenced code block of the README."""
    block = re.search(r"^```[a-z]*\n(.*?)^```", readme.read_text(), re.S | re.M)
    assert block, "README.md has no code block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_the_two_commands():
    serve, test = readme_commands(ROOT / "README.md")
    assert serve.endswith("orderview dev") and "pip install" in serve
    assert test.endswith("pytest") and "pip install" in test


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("ORDERVIEW_README_RUN") == "1", reason="inside a README run")
def test_readme_commands_work_as_written_in_a_fresh_clone(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    serve, test = readme_commands(ROOT / "README.md")
    clone = tmp_path / "orderview"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = dev_env(
        ORDERVIEW_README_RUN="1", ORDERVIEW_TEST_EMBEDDED="1", PYTEST_ADDOPTS=INNER_OPTIONS
    )

    run = DevRun.start(["bash", "-c", serve], env, cwd=clone)
    run.wait_for_banner(timeout=INSTALL_TIMEOUT)
    pids = run.descendants()
    check_both_dialects(run)
    ports = [run.api_port, *json.loads((clone / ".orderview" / "ports.json").read_text()).values()]
    assert run.stop(signal.SIGINT) == 0, run.text[-3000:]
    assert_nothing_left(pids, ports)

    done = subprocess.run(
        ["bash", "-c", test],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-2000:]
