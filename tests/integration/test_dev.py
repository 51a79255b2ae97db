"""`orderview dev` as a user runs it: printed curl lines answer in both dialects, Ctrl-C leaves nothing.

The cold/warm timings these tests measure are printed (`-s` shows them).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.embedded import free_port
from tests.conftest import create_database, drop_database
from tests.integration.test_embedded import all_gone, listening, psutil

ROOT = Path(__file__).resolve().parents[2]
BANNER_END = "Ctrl-C stops everything."
COLD_TIMEOUT = 180.0


@dataclass
class DevRun:
    """A running `orderview dev` (or a shell line ending in it) and everything it printed."""

    proc: subprocess.Popen
    started: float
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> DevRun:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own group, as a terminal's foreground job
        )
        run = cls(proc, time.monotonic())
        threading.Thread(target=run._pump, daemon=True).start()
        return run

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_banner(self, timeout: float = COLD_TIMEOUT) -> float:
        """Seconds from start until the banner's last line was printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.lines.append(line)
            if line.strip() == BANNER_END:
                return time.monotonic() - self.started
        self.stop(signal.SIGKILL)
        raise AssertionError("no banner; output:\n" + "\n".join(self.lines[-60:]))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def curl_lines(self) -> list[str]:
        return [line.strip() for line in self.lines if line.strip().startswith("curl ")]

    @property
    def api_port(self) -> int:
        return int(re.search(r"API\s+http://[\d.]+:(\d+)", self.text).group(1))

    def descendants(self) -> list[int]:
        proc = psutil.Process(self.proc.pid)
        return [proc.pid, *(c.pid for c in proc.children(recursive=True))]

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        """Send `sig` to the process group, as a terminal's Ctrl-C does; return the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        while (line := self._queue.get(timeout=5)) is not None:
            self.lines.append(line)
        return code


def dev_env(**extra: str) -> dict[str, str]:
    """The environment without any ORDERVIEW_* setting (so `dev` starts embedded servers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def call(curl_line: str) -> dict:
    """Run a printed curl line as a user pastes it; its JSON body."""
    assert shutil.which("curl"), "curl is not installed"
    done = subprocess.run(["bash", "-c", curl_line], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def check_both_dialects(run: DevRun) -> dict[str, str]:
    """Every printed curl line answers with data; the key of each tenant."""
    lines = run.curl_lines
    assert len(lines) == 4, run.text  # two tenants × two dialects
    for line in lines:
        body = call(line)
        assert body["data"], (line, body)
        if "/api/v1/service-orders" in line:
            assert {"items", "participant", "total"} <= set(body["data"][0])
        else:
            assert body["success"] is True and body["data"][0]["id"].startswith("ord_")
    return dict(re.findall(r"tenant (\S+) \(.*?\n.*?Bearer (\S+?)'", run.text))


def assert_nothing_left(pids: list[int], ports: list[int]) -> None:
    assert all_gone(pids) == [], "orphan processes: " + ", ".join(
        " ".join(p.cmdline()) for p in map(psutil.Process, all_gone(pids, 0))
    )
    assert [p for p in ports if listening(p)] == []


@pytest.mark.smoke
def test_dev_serves_both_dialects_cold_then_warm_and_ctrl_c_leaves_nothing_running(tmp_path):
    data = tmp_path / "dev-data"
    port = free_port()
    argv = [sys.executable, "-m", "orderview.cli", "dev", "--data-dir", str(data)]
    argv += ["--port", str(port)]

    cold = DevRun.start(argv, dev_env())
    cold_s = cold.wait_for_banner()
    pids = cold.descendants()
    assert len(pids) >= 5  # dev, projector, api, postgres (+ helpers), valkey
    keys = check_both_dialects(cold)
    assert "demo history published" in cold.text
    ports = [port, *json.loads((data / "ports.json").read_text()).values()]
    assert cold.stop(signal.SIGINT) == 0, cold.text[-3000:]
    assert_nothing_left(pids, ports)

    warm = DevRun.start(argv, dev_env())
    warm_s = warm.wait_for_banner(timeout=60)
    pids = warm.descendants()
    assert check_both_dialects(warm) == keys  # the kept keys still work
    assert "demo history published" not in warm.text
    assert warm.stop(signal.SIGTERM) == 0, warm.text[-3000:]
    assert_nothing_left(pids, ports)
    print(f"\norderview dev: cold start {cold_s:.1f}s, warm start {warm_s:.1f}s to the banner")


@pytest.fixture
def own_database(servers):
    """A database of this test's own on the session's PostgreSQL, dropped after."""
    url = create_database(servers[0], f"orderview_dev_{os.getpid()}")
    yield url
    drop_database(servers[0], url)


def test_dev_uses_configured_servers_and_starts_none(tmp_path, own_database, redis_url, env):
    configured = {"ORDERVIEW_DATABASE_URL": own_database, "ORDERVIEW_REDIS_URL": redis_url}
    configured["ORDERVIEW_STREAMS"] = env["ORDERVIEW_STREAMS"]
    argv = [sys.executable, "-m", "orderview.cli", "dev", "--data-dir", str(tmp_path)]
    run = DevRun.start([*argv, "--port", str(free_port())], dev_env(**configured))
    try:
        run.wait_for_banner()
        names = {psutil.Process(p).name() for p in run.descendants()}
        assert not names & {"postgres", "valkey-server"}, names
        check_both_dialects(run)
    finally:
        pids = run.descendants()
        assert run.stop() == 0
    assert_nothing_left(pids, [])
    assert not (tmp_path / "postgres").exists()


def _wait_for_line(run: DevRun, needle: str, timeout: float = COLD_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = run._queue.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        run.lines.append(line)
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never printed:\n" + run.text[-3000:])


@pytest.mark.parametrize(
    ("moment", "sig", "code"),
    [
        pytest.param('"migrated"', signal.SIGINT, 0, id="ctrl-c-while-starting"),
        pytest.param(BANNER_END, signal.SIGKILL, -signal.SIGKILL, id="dev-killed-outright"),
    ],
)
def test_dev_leaves_no_process_behind_when_stopped_early_or_killed(tmp_path, moment, sig, code):
    argv = [sys.executable, "-m", "orderview.cli", "dev", "--data-dir", str(tmp_path)]
    run = DevRun.start([*argv, "--port", str(free_port())], dev_env())
    _wait_for_line(run, moment)
    pids = run.descendants()
    assert len(pids) >= 3  # dev, postgres, valkey at least
    assert run.stop(sig) == code
    assert_nothing_left(pids, list(json.loads((tmp_path / "ports.json").read_text()).values()))
