"""The real `orderview api` process: keys and features from the CLI, serving, revocation, and a
SIGTERM that drains requests in flight and exits 0."""

from __future__ import annotations

import asyncio
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
from tests.integration.test_api.conftest import api_env

ORDERVIEW = str(Path(sys.executable).parent / "orderview")


@pytest.fixture(scope="module")
def process_env(database_url, redis_url) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    return env | api_env(database_url, redis_url)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ORDERVIEW, *args], env=env, capture_output=True, text=True, timeout=60)


def _start_api(env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [ORDERVIEW, "api", "--port", str(port)],
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
    async with httpx.AsyncClient(base_url=base) as c:
        for _ in range(200):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                if (await c.get("/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the API did not become ready")


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


async def test_the_api_process_serves_and_drains_requests_in_flight_on_sigterm(
    loaded, db, process_env
):
    created = _cli(process_env, "keys", "create", "--tenant", "acme", "--scopes",
                   "service_orders,orders:read")  # fmt: skip
    key = created.stdout.strip().splitlines()[-1]
    assert (
        _cli(process_env, "features", "enable", "--tenant", "acme", "service_orders").returncode
        == 0
    )
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

            # Requests in flight (held by a table lock) when SIGTERM arrives all complete.
            async with db.acquire() as conn, conn.transaction():
                await conn.execute(f"LOCK TABLE {ORDERS} IN ACCESS EXCLUSIVE MODE")
                requests = [await _send(port, key) for _ in range(8)]
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                assert proc.poll() is None
            answers = await asyncio.gather(*(_answer(reader) for reader, _ in requests))
            assert answers == [200] * len(requests)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


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
