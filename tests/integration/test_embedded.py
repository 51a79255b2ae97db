"""The embedded PostgreSQL and Valkey stack: starts, serves, reuses its data, leaves nothing running."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest
import redis

from services.embedded import EmbeddedError, EmbeddedStack

psutil = pytest.importorskip("psutil", reason="the dev extra is not installed")


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


def all_gone(pids: list[int], timeout: float = 10) -> list[int]:
    """The pids still running after `timeout` seconds (empty: all gone)."""
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if psutil.pid_exists(p) and not _zombie(p)]
        time.sleep(0.05)
    return alive


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def tree(pids: list[int]) -> list[int]:
    """The pids and every descendant of them."""
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            out += [pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.NoSuchProcess:
            pass
    return out


async def _database_round_trip(admin_url: str) -> int:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute("CREATE DATABASE embedded_probe")
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (n int)")
        await conn.execute("INSERT INTO kept VALUES (1)")
        return await conn.fetchval("SELECT count(*) FROM kept")
    finally:
        await conn.close()


@pytest.mark.smoke
def test_stack_serves_postgres_and_valkey_streams_then_stops_without_leftovers(tmp_path: Path):
    stack = EmbeddedStack(tmp_path / "data")
    pg_url, redis_url = stack.start()
    try:
        pids = tree(stack.pids)
        ports = [stack.pg_port, stack.valkey_port]
        assert asyncio.run(_database_round_trip(pg_url)) == 1
        client = redis.Redis.from_url(redis_url)
        client.xadd("s", {"event": "{}"})
        client.xgroup_create("s", "g", id="0")
        assert client.xreadgroup("g", "c", {"s": ">"}, count=1)[0][1][0][1] == {b"event": b"{}"}
        client.close()
    finally:
        stack.stop()
    assert all_gone(pids) == []
    assert not any(listening(p) for p in ports)


def test_second_start_reuses_data_and_ports_quickly(tmp_path: Path):
    folder = tmp_path / "data"
    with EmbeddedStack(folder, durable=True) as stack:
        assert asyncio.run(_database_round_trip(stack.pg_url)) == 1
        redis.Redis.from_url(stack.redis_url).xadd("kept", {"event": "{}"})
        ports = (stack.pg_port, stack.valkey_port)
    started = time.monotonic()
    with EmbeddedStack(folder, durable=True) as stack:
        elapsed = time.monotonic() - started

        async def count() -> int:
            conn = await asyncpg.connect(stack.pg_url)
            try:
                return await conn.fetchval("SELECT count(*) FROM kept")
            finally:
                await conn.close()

        assert asyncio.run(count()) == 1
        assert redis.Redis.from_url(stack.redis_url).xlen("kept") == 1
        assert (stack.pg_port, stack.valkey_port) == ports
    assert elapsed < 5, f"warm start took {elapsed:.1f}s"


def test_a_folder_serves_one_stack_at_a_time(tmp_path: Path):
    with EmbeddedStack(tmp_path) as first:
        with pytest.raises(EmbeddedError, match="in use"):
            EmbeddedStack(tmp_path).start()
        with pytest.raises(EmbeddedError, match="in use"):
            EmbeddedStack.wipe(tmp_path)
        assert listening(first.pg_port)


_HOLDER = """
import json, sys, time
from pathlib import Path
from services.embedded import EmbeddedStack
stack = EmbeddedStack(Path(sys.argv[1]))
stack.start()
print(json.dumps({"pids": stack.pids, "ports": [stack.pg_port, stack.valkey_port]}), flush=True)
time.sleep(600)
"""


def test_servers_stop_when_their_parent_is_killed(tmp_path: Path):
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, cwd=root, text=True
    )
    try:
        info = json.loads(holder.stdout.readline())
        pids = tree(info["pids"])
        assert len(pids) >= 3  # postmaster, its helpers, valkey
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert all_gone(pids, timeout=20) == []
    assert not any(listening(p) for p in info["ports"])


@pytest.mark.smoke
async def test_the_demo_history_projects_into_the_session_servers(settings, pool, redis_client):
    """Runs on whichever servers the session chose: the embedded ones with ORDERVIEW_TEST_EMBEDDED=1."""
    from services.demo import demo_history
    from tests.support import dead_letters, project

    await project(redis_client, settings, demo_history())
    counts = dict(await pool.fetch("SELECT tenant, count(*) FROM read_model.orders GROUP BY 1"))
    assert counts == {"acme": 2000, "globex": 2000}
    assert len(await dead_letters(redis_client, settings.streams[0])) == 10
