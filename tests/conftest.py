"""Real PostgreSQL and Redis for every test run: its own database and stream keys, removed after.

Which servers: ORDERVIEW_TEST_DATABASE_URL / ORDERVIEW_TEST_REDIS_URL when set; else the machine's
PostgreSQL and Redis on their default ports when they answer; else (or with
ORDERVIEW_TEST_EMBEDDED=1) embedded ones started for the session (`pip install -e '.[dev]'`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as redis

from orderview.settings import Settings, load_settings
from projections.migrate import migrate
from projections.tables import ORDERS, PARTICIPANTS

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
RUN_ID = secrets.token_hex(4)


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 1
        ):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[str, str]]:
    """(PostgreSQL admin URL, Redis URL) of the servers this run uses."""
    forced = os.environ.get("ORDERVIEW_TEST_EMBEDDED") == "1"
    pg = os.environ.get("ORDERVIEW_TEST_DATABASE_URL", DEFAULT_PG)
    rd = os.environ.get("ORDERVIEW_TEST_REDIS_URL", DEFAULT_REDIS)
    if not forced and _answers(pg, 5432) and _answers(rd, 6379):
        yield pg, rd
        return
    from services.embedded import EmbeddedStack

    with tempfile.TemporaryDirectory(prefix="orderview-test-") as folder:
        stack = EmbeddedStack(Path(folder))
        try:
            pg_url, redis_url = stack.start()
            yield pg_url, redis_url
        finally:
            stack.stop()


@pytest.fixture(scope="session")
def database_url(servers: tuple[str, str]) -> Iterator[str]:
    """A database of this run's own, migrated, dropped at the end."""
    url = create_database(servers[0], f"orderview_test_{RUN_ID}")

    async def setup() -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(setup())
    yield url
    drop_database(servers[0], url)


@pytest.fixture(scope="session")
def redis_url(servers: tuple[str, str]) -> Iterator[str]:
    """The Redis URL; every key this run made (prefix `ovtest:<run>:`) is deleted at the end."""
    url = servers[1]
    yield url

    async def cleanup() -> None:
        client = redis.from_url(url)
        try:
            keys = [k async for k in client.scan_iter(match=f"ovtest:{RUN_ID}:*", count=1000)]
            for i in range(0, len(keys), 500):
                await client.delete(*keys[i : i + 500])
        finally:
            await client.aclose()

    asyncio.run(cleanup())


def _admin(admin_url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def create_database(admin_url: str, name: str) -> str:
    """Create a database on the server of `admin_url`; return its URL."""
    _admin(admin_url, f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def drop_database(admin_url: str, url: str) -> None:
    """Drop a database made by create_database, connections and all."""
    _admin(admin_url, f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" WITH (FORCE)')


_counter = iter(range(1, 1_000_000))


@pytest.fixture
def stream_prefix() -> str:
    """A key prefix no other test (or run) uses."""
    return f"ovtest:{RUN_ID}:{next(_counter)}"


@pytest.fixture
def env(database_url: str, redis_url: str, stream_prefix: str) -> dict[str, str]:
    """ORDERVIEW_* variables for this test: its own stream and consumer group."""
    return {
        "ORDERVIEW_DATABASE_URL": database_url,
        "ORDERVIEW_REDIS_URL": redis_url,
        "ORDERVIEW_STREAMS": f"{stream_prefix}:orders:events",
        "ORDERVIEW_CONSUMER_GROUP": "orderview",
        "ORDERVIEW_CONSUMER_NAME": "test-consumer",
        "ORDERVIEW_METRICS_PORT": "0",
        "ORDERVIEW_BLOCK_MS": "100",
        "ORDERVIEW_CURSOR_SECRET": "test-cursor-secret-0123456789",
    }


@pytest.fixture
def settings(env: dict[str, str]) -> Settings:
    """Settings of this test, parsed the way the processes parse them."""
    return load_settings(env)


@pytest.fixture
def subprocess_env(env: dict[str, str]) -> dict[str, str]:
    """The environment for an `orderview` child process of this test."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}, **env}


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on this run's database, read tables emptied before the test."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    await pool.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}")
    yield pool
    await pool.close()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    """A Redis client returning bytes."""
    client = redis.from_url(redis_url)
    yield client
    await client.aclose()


def contract_dir() -> Path | None:
    """The product contract folder (`shared/contract`), which is not part of this repository."""
    here = Path(__file__).resolve().parents[1]
    candidates = [os.environ.get("ORDERVIEW_CONTRACT_DIR", ""), here.parent / "shared" / "contract"]
    candidates.append("/work/shared/contract")
    for c in candidates:
        if c and (Path(c) / "examples" / "events.jsonl").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def examples() -> Path:
    """The contract's examples folder; set ORDERVIEW_CONTRACT_DIR when it is elsewhere."""
    folder = contract_dir()
    if folder is None:
        pytest.skip("contract examples not found: set ORDERVIEW_CONTRACT_DIR to shared/contract")
    return folder / "examples"


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster of this run's own on loopback: 3 masters, 3 replicas (tests/cluster.py)."""
    from services.embedded import EmbeddedError
    from tests.cluster import LocalCluster

    try:
        cluster = LocalCluster()
    except EmbeddedError as exc:
        pytest.skip(f"no redis-server and no embedded Valkey: {exc}")
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def replica_pair():
    """A PostgreSQL primary and a streaming replica of it for the session (tests/replica.py)."""
    from tests.replica import ReplicaPair

    with ReplicaPair.started() as pair:
        yield pair
