"""Processes and servers the crash and reliability suites start, break and restart.

`Replicas` runs `orderview projector` children on one group; `ApiProcess` one `orderview api`;
`PrivateRedis` a `redis-server` of the test's own (append-only, so a restart keeps the streams).
`LONG` (ORDERVIEW_LONG=1) selects the long variant of every reliability suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from services.embedded import free_port
from tests.support import ORDERVIEW

LONG = os.environ.get("ORDERVIEW_LONG") == "1"


def scale(short: int, long: int) -> int:
    """The short figure in the default run, the long one with ORDERVIEW_LONG=1."""
    return long if LONG else short


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Replicas:
    """`orderview projector` child processes on one consumer group, each with a stable name.

    Their stderr goes to files (a full pipe would stall a chatty child); `logs()` shows the tails.
    """

    def __init__(self, env: dict[str, str], count: int):
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}
        self.folder = Path(tempfile.mkdtemp(prefix="orderview-replicas-"))
        for i in range(count):
            self.start(f"projector-{i}")

    def start(self, name: str) -> None:
        env = {**self.env, "ORDERVIEW_CONSUMER_NAME": name}
        self.starts[name] = self.starts.get(name, 0) + 1
        with open(self.folder / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [ORDERVIEW, "projector"], env=env, stdout=subprocess.DEVNULL, stderr=log
            )

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def restart(self, name: str, as_name: str | None = None) -> str:
        """SIGKILL `name` and start it again (under `as_name`, a new consumer, when given)."""
        self.kill(name)
        self.start(as_name or name)
        return as_name or name

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{_tail(p)}" for p in sorted(self.folder.glob("*.log")))

    def started(self, name: str) -> bool:
        """Whether the latest start of `name` is running (its signal handlers installed)."""
        log = (self.folder / f"{name}.log").read_text(errors="replace")
        return log.count("projector started") >= self.starts[name]

    def stop_all(self) -> dict[str, int]:
        """SIGTERM every replica once it has started; their exit codes. (A SIGTERM to a process
        still starting its interpreter kills it by the signal, before any code of ours runs.)"""
        deadline = time.monotonic() + 30
        for name, proc in self.procs.items():
            while proc.poll() is None and not self.started(name) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for name, proc in self.procs.items():
            try:
                codes[name] = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def close(self) -> None:
        self.stop_all()
        shutil.rmtree(self.folder, ignore_errors=True)


async def wait_ready(
    base: str, proc: subprocess.Popen, output: Callable[[], str], timeout: float = 30
) -> None:
    """Wait for an API process's `/health/ready` to answer 200; its `output` if it dies or not."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=base) as client:
        while asyncio.get_running_loop().time() < deadline:
            assert proc.poll() is None, output()
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the API did not become ready:\n{output()}")


class ApiProcess:
    """One `orderview api` process on a free port; stderr in a file."""

    def __init__(self, env: dict[str, str]):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="orderview-api-", suffix=".log")[1])
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [ORDERVIEW, "api", "--port", str(self.port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    async def ready(self, timeout: float = 30) -> None:
        """Wait for `/health/ready` to answer 200."""
        await wait_ready(self.base, self.proc, lambda: _tail(self.log), timeout)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, wait; the exit code (SIGKILL after `timeout`)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.unlink(missing_ok=True)

    def logs(self) -> str:
        return _tail(self.log)


class Traffic:
    """Requests to the API every 50 ms in the background; every status seen, by phase."""

    def __init__(self, base: str, headers: dict[str, str]):
        self.client = httpx.AsyncClient(base_url=base, headers=headers, timeout=10)
        self.phase = "start"
        self.seen: Counter[tuple[str, int]] = Counter()
        self.failures: list[str] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            for path in ("/v1/orders?limit=5", "/api/v1/service-orders?limit=5"):
                try:
                    status = (await self.client.get(path)).status_code
                except httpx.TransportError as exc:
                    self.failures.append(f"{self.phase}: {exc!r}")
                    continue
                self.seen[(self.phase, status)] += 1
            await asyncio.sleep(0.05)

    async def __aenter__(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.client.aclose()


class PrivateRedis:
    """A `redis-server` of the test's own on a free port, fsyncing every write to its AOF."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = Path(tempfile.mkdtemp(prefix="orderview-redis-"))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_ready(self, timeout: float = 10) -> None:
        import redis.asyncio as redis

        deadline = asyncio.get_running_loop().time() + timeout
        client = redis.from_url(self.url)
        try:
            while True:
                try:
                    if await client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, OSError):
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def stop(self) -> None:
        """SIGTERM (an AOF server loses nothing it acknowledged) and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
