"""The real `orderview api` process: keys and features from the CLI, serving, revocation, and a
SIGTERM that drains requests in flight and exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from projections.tables import ORDERS
from services.api.server import GRACEFUL_SECONDS
from tests.chaos import wait_ready
from tests.integration.test_api.conftest import api_env

ORDERVIEW = str(Path(sys.executable).parent / "orderview")


@pytest.fixture(scope="module")
def process_env(database_url, redis_url) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    return env | api_env(database_url, redis_url)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ORDERVIEW, *args], env=env, capture_output=True, text=True, timeout=60)


def _start_api(env: dict[str, str], port: int, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [ORDERVIEW, "api", "--port", str(port), *options],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _until_ready(base: str, proc: subprocess.Popen) -> None:
    def output() -> str:  # reading a live process's stderr pipe would block until it exits
        return proc.stderr.read() if proc.stderr and proc.poll() is not None else ""

    await wait_ready(base, proc, output, timeout=20)


async def _send(port: int, key: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/service-orders?limit=100&include=items,participant HTTP/1.1\r\n"
        b"Host: t\r\nAuthorization: Bearer " + key.encode() + b"\r\nConnection: close\r\n\r\n"
    )
    await writer.drain()
    return reader, writer


async def _answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    await reader.readexactly(length)
    return int(head.split()[1])


def test_keys_create_prints_the_plaintext_key_alone_on_the_last_line(process_env):
    result = _cli(process_env, "keys", "create", "--tenant", "acme", "--scopes", "orders:read")

    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("ovk_") and " " not in last


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["keys", "create", "--tenant", "acme", "--scopes", "admin"], id="bad-scope"),
        pytest.param(
            ["keys", "create", "--tenant", "ACME!", "--scopes", "orders:read"], id="bad-tenant"
        ),
        pytest.param(["keys", "revoke", "ovk_never_made"], id="unknown-key"),
    ],
)
def test_key_commands_refuse_bad_input_with_one_line(process_env, args):
    result = _cli(process_env, *args)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_enabling_a_feature_no_endpoint_checks_says_so(process_env):
    """A typo (service-orders) is stored, as a later version may know it, but not silently."""
    typo = _cli(process_env, "features", "enable", "--tenant", "acme", "service-orders")
    known = _cli(process_env, "features", "enable", "--tenant", "acme", "service_orders")

    assert typo.returncode == 0 and known.returncode == 0
    assert "no endpoint of this version checks 'service-orders'" in typo.stderr
    assert "service_orders" in typo.stderr.splitlines()[-1]
    assert known.stderr == ""


def _service_orders_key(env: dict[str, str]) -> str:
    created = _cli(env, "keys", "create", "--tenant", "acme", "--scopes",
                   "service_orders,orders:read")  # fmt: skip
    assert _cli(env, "features", "enable", "--tenant", "acme", "service_orders").returncode == 0
    return created.stdout.strip().splitlines()[-1]


async def _refused_or_not_ready(base: str) -> bool:
    """Whether a new connection's readiness probe fails (refused, or not a 200)."""
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as probe:
            return (await probe.get("/health/ready")).status_code != 200
    except httpx.TransportError:
        return True


async def test_the_api_process_serves_and_drains_requests_in_flight_on_sigterm(
    loaded, db, process_env
):
    key = _service_orders_key(process_env)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_api(process_env, port)
    try:
        await _until_ready(base, proc)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=base, headers=headers) as c:
            response = await c.get("/api/v1/service-orders", params={"limit": 100})
            assert response.status_code == 200
            assert len(response.json()["data"]) == 60
            assert (await c.get("/schema/openapi.json")).status_code == 200

            # Requests in flight (held by a table lock) when SIGTERM arrives all complete, and
            # meanwhile the process is not ready (a probe on a new connection fails).
            async with db.acquire() as conn, conn.transaction():
                await conn.execute(f"LOCK TABLE {ORDERS} IN ACCESS EXCLUSIVE MODE")
                requests = [await _send(port, key) for _ in range(8)]
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                assert proc.poll() is None
                assert await _refused_or_not_ready(base)
            answers = await asyncio.gather(*(_answer(reader) for reader, _ in requests))
            assert answers == [200] * len(requests)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '"api worker drained"' in proc.stderr.read()


async def test_a_revoked_key_is_refused_by_the_running_process_within_5_seconds(
    loaded, process_env
):
    key = _cli(process_env, "keys", "create", "--tenant", "acme", "--scopes", "orders:read")
    key = key.stdout.strip().splitlines()[-1]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_api(process_env, port)
    try:
        await _until_ready(base, proc)
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}
        ) as c:
            assert (await c.get("/v1/orders")).status_code == 200
            assert _cli(process_env, "keys", "revoke", key).returncode == 0
            revoked_at = time.monotonic()
            while (await c.get("/v1/orders")).status_code != 401:
                assert time.monotonic() - revoked_at < 5
                await asyncio.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an exited child its new parent did not reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def _held_in_flight(db, port: int, key: str, proc: subprocess.Popen, sig: int) -> list[int]:
    """Statuses of 8 list requests held by a table lock while `sig` reaches `proc`."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(f"LOCK TABLE {ORDERS} IN ACCESS EXCLUSIVE MODE")
        requests = [await _send(port, key) for _ in range(8)]
        await asyncio.sleep(0.5)
        proc.send_signal(sig)
        await asyncio.sleep(0.5)
        assert proc.poll() is None
    return list(await asyncio.gather(*(_answer(reader) for reader, _ in requests)))


async def test_sigterm_to_workers_drains_each_and_leaves_no_worker_behind(loaded, db, process_env):
    key = _service_orders_key(process_env)
    port = _free_port()
    proc = _start_api(process_env, port, "--workers", "2")
    try:
        await _until_ready(f"http://127.0.0.1:{port}", proc)
        workers = _children(proc.pid)
        assert len(workers) == 2

        assert await _held_in_flight(db, port, key, proc, signal.SIGTERM) == [200] * 8
        assert proc.wait(timeout=30) == 0
        assert not [pid for pid in workers if _running(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    drained = [line for line in proc.stderr.read().splitlines() if '"api worker drained"' in line]
    assert len(drained) == 2, "each worker drained and ran its lifespan's shutdown"


async def test_sigint_drains_the_process_like_sigterm(loaded, db, process_env):
    key = _service_orders_key(process_env)
    port = _free_port()
    proc = _start_api(process_env, port)
    try:
        await _until_ready(f"http://127.0.0.1:{port}", proc)

        assert await _held_in_flight(db, port, key, proc, signal.SIGINT) == [200] * 8
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '"api worker drained"' in proc.stderr.read()


async def test_workers_stop_when_their_main_process_is_killed(loaded, process_env):
    port = _free_port()
    proc = _start_api(process_env, port, "--workers", "2")
    workers: list[int] = []
    try:
        await _until_ready(f"http://127.0.0.1:{port}", proc)
        workers = _children(proc.pid)
        proc.kill()
        proc.wait()
        # Each drains (nothing in flight) and exits, at the latest after GRACEFUL_SECONDS.
        for _ in range(10 * (GRACEFUL_SECONDS + 10)):
            if not any(_running(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert not [pid for pid in workers if _running(pid)]
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


async def test_workers_stop_when_their_main_process_is_killed_while_they_start(process_env):
    port = _free_port()
    proc = _start_api(process_env, port, "--workers", "2")
    workers: list[int] = []
    try:
        for _ in range(300):  # killed as soon as both workers exist, before they serve
            workers = _children(proc.pid)
            if len(workers) == 2:
                break
            await asyncio.sleep(0.01)
        proc.kill()
        proc.wait()
        for _ in range(300):
            if not any(_running(pid) for pid in workers):
                break
            await asyncio.sleep(0.1)
        assert len(workers) == 2
        assert not [pid for pid in workers if _running(pid)]
    finally:
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
