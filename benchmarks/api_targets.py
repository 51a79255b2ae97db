"""The targets `benchmarks/api.py` measures: HTTP servers under wrk, and PostgreSQL under pgbench."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.api_peers import TooManyClients, ensure_platformatic, pgbench, platformatic_command

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS = 64


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(kind: str, port: int, baseline: Path | None) -> tuple[list[str], Path, dict]:
    """How each server is started, in which folder, with which extra environment."""
    if kind == "peer":
        folder = ensure_platformatic()
        return platformatic_command(folder), folder, {}
    if kind == "baseline":  # `orderview api` of another checkout, its code first on the path
        cli = "import sys; from orderview.cli import main; sys.exit(main())"
        args = [sys.executable, "-c", cli, "api", "--port", str(port)]
        return args, baseline, {"PYTHONPATH": str(baseline)}
    commands = {
        # As `orderview api` starts it: no flag but the port.
        "api": [str(BIN / "orderview"), "api", "--port", str(port)],
        "bare": [str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--no-ws",
                 "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
                 "benchmarks.api_bare:app"],
        "floor": [str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--no-ws",
                  "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
                  "benchmarks.api_floor:app"],
        "ceiling": [str(BIN / "uvicorn"), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                    "--log-level", "warning", "--port", str(port), "benchmarks.api_ceiling:app"],
    }  # fmt: skip
    return commands[kind], ROOT, {}


def rss_mib(pid: int) -> float:
    """RSS of a process and its children (granian's CLI: its main process and its worker)."""
    total = 0
    pids = [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]  # fmt: skip
    for p in pids:
        with contextlib.suppress(OSError, TypeError):
            total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())[1])
    return total / 1024


def lua_of(folder: Path, name: str, paths: list[str], headers: dict[str, str] | None = None) -> str:
    """A wrk script requesting one of `paths` at random (each thread seeded on its own), with
    `headers` besides wrk's own."""
    lua = folder / f"{name}.lua"
    quoted = ",".join(f'"{p}"' for p in paths)
    extra = "".join(f'wrk.headers["{k}"] = "{v}"; ' for k, v in (headers or {}).items())
    lua.write_text(
        f"local paths = {{{quoted}}}\n"
        "local n = 0\n"
        "setup = function(thread) n = n + 1; thread:set('seed', n) end\n"
        f"init = function(args) {extra}math.randomseed(seed or 1) end\n"
        "request = function() return wrk.format(nil, paths[math.random(#paths)]) end\n"
    )
    return str(lua)


def wrk(binary: str, url: str, seconds: int, key: str, lua: str) -> dict[str, float]:
    args = [binary, "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
            "-H", f"Authorization: Bearer {key}", "-s", lua, url]  # fmt: skip
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def ms(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    count = int(errors[1]) if errors else 0
    count += sum(map(int, failed.groups())) if failed else 0
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "errors": count}


class Server:
    """One HTTP target: its process, its port, its wrk scripts and its peak RSS while measured."""

    def __init__(
        self, kind: str, env: dict[str, str], wrk_bin: str, key: str, baseline: Path | None = None
    ) -> None:
        self.kind, self.port, self.wrk_bin, self.key = kind, free_port(), wrk_bin, key
        self.scripts: dict[str, str] = {}
        self.peak = 0.0
        args, cwd, extra = command(kind, self.port, baseline)
        env = env | {"PORT": str(self.port)} | extra
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=subprocess.DEVNULL)
        for _ in range(600):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} exited with {self.proc.returncode} on start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{kind} did not start")

    def measure(self, scenario: str, seconds: int) -> dict:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                self.peak = max(self.peak, rss_mib(self.proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            url = f"http://127.0.0.1:{self.port}/"
            return wrk(self.wrk_bin, url, seconds, self.key, self.scripts[scenario])
        finally:
            stop.set()
            sampler.join()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


class PgBench:
    """PostgreSQL alone: pgbench runs the scenario's scripts; no process of ours to weigh.

    Clients: 64 at most, fewer when the server's connection limit (shared with everything else
    on the machine) leaves fewer free just before the run; each result says how many.
    """

    kind = "pgbench"
    peak = None

    def __init__(self, url: str, scripts: dict, variables: list[str], folder: Path):
        self.url, self.scripts, self.variables, self.folder = url, scripts, variables, folder

    def measure(self, scenario: str, seconds: int) -> dict | None:
        """One run; None when PostgreSQL has no connection free for it (the run is skipped)."""
        clients = max(4, min(CONNECTIONS, free_connections(self.url) - 20))
        for _ in range(4):
            try:
                result = pgbench(
                    self.url, self.scripts[scenario], self.variables, clients, seconds, self.folder
                )
                return result | {"clients": clients}
            except TooManyClients:
                clients = max(2, clients // 2)
                time.sleep(1)
        return None

    def stop(self) -> int:
        return 0


def free_connections(url: str) -> int:
    """Connections PostgreSQL would still accept from a superuser, now."""
    sql = (
        "SELECT current_setting('max_connections')::int"
        " - current_setting('superuser_reserved_connections')::int"
        " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
    )
    out = subprocess.run(["psql", "-Atc", sql, url], capture_output=True, text=True)
    return int(out.stdout) if out.returncode == 0 else 0  # none free even for psql
