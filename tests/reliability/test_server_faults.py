"""Server faults: a projector and an API process on a private Redis and a private PostgreSQL, while
Redis restarts, their PostgreSQL connections are terminated, and PostgreSQL stops and starts again.
Both recover by themselves within 10 s, nothing is lost, the API never answers 500, and
`/health/ready` is 503 while PostgreSQL is down and 200 after.

    .venv/bin/pytest tests/reliability/test_server_faults.py -s                  # one round of faults
    ORDERVIEW_LONG=1 .venv/bin/pytest tests/reliability/test_server_faults.py -s # three rounds
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from orderview.settings import load_settings
from projections.migrate import migrate
from projections.tables import ORDERS
from services.api.keys import create_key, set_feature
from services.embedded import EmbeddedError, EmbeddedStack
from services.histories import varied
from tests.chaos import LONG, ApiProcess, PrivateRedis, Replicas, Traffic, scale
from tests.model import differences, expected_state, table_state
from tests.reliability.test_chaos import publish_paced
from tests.reliability.test_poison_flood import applied_seqs
from tests.support import outstanding, publish_lines, wait_until_caught_up

RECOVERY = 10.0  # seconds a process may take to work again after a fault ends


@pytest.fixture
async def private_servers() -> AsyncIterator[tuple[EmbeddedStack, PrivateRedis]]:
    """A PostgreSQL (migrated) and a Redis of this test's own, which it may stop and start."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH")
    folder = Path(tempfile.mkdtemp(prefix="orderview-faults-"))
    stack = EmbeddedStack(folder, postgres=True, valkey=False)
    try:
        stack.start()
    except EmbeddedError as exc:
        pytest.skip(f"no embedded PostgreSQL: {exc}")
    rd = PrivateRedis()
    rd.start()
    try:
        await rd.wait_ready()
        conn = await asyncpg.connect(stack.pg_url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield stack, rd
    finally:
        rd.close()
        stack.stop()
        EmbeddedStack.wipe(folder)


async def until(check, limit: float, what: str) -> float:
    """Seconds until `await check()` is true; fails after `limit`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < limit, f"{what}: not within {limit:g}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def ready_status(base: str) -> int:
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        try:
            return (await client.get("/health/ready")).status_code
        except httpx.TransportError:
            return 0


@pytest.mark.slow
async def test_projector_and_api_recover_from_redis_restarts_killed_connections_and_a_stopped_postgresql(  # noqa: E501
    private_servers, subprocess_env, stream_prefix
):
    stack, rd = private_servers
    pg_url = stack.pg_url
    env = {**subprocess_env, "ORDERVIEW_DATABASE_URL": pg_url, "ORDERVIEW_REDIS_URL": rd.url,
           "ORDERVIEW_STREAMS": f"{stream_prefix}:0,{stream_prefix}:1",
           "ORDERVIEW_LOG_LEVEL": "ERROR", "ORDERVIEW_KEY_CACHE_SECONDS": "1"}  # fmt: skip
    settings = load_settings(env)
    rounds = scale(1, 3)
    history = varied(5, tenants=1, orders=scale(300, 600))
    size = -(-len(history.events) // (4 * rounds))
    chunks = [history.events[i : i + size] for i in range(0, len(history.events), size)]
    db = await asyncpg.connect(pg_url)
    async with db.transaction():
        _, key = await create_key(db, "tenant-0", ["orders:read", "service_orders"])
        await set_feature(db, "tenant-0", "service_orders", True)
    await db.close()
    # The test's own client reconnects after the restart (a dropped connection is retried once).
    client = redis.from_url(
        rd.url, retry=Retry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError]
    )
    pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=2)
    projector, api = Replicas(env, 1), ApiProcess(env)
    published = 0
    recoveries: dict[str, list[float]] = {"redis": [], "terminate": [], "postgres": []}

    async def publish(chunk: list[dict]) -> None:
        nonlocal published
        await publish_lines(client, settings, [json.dumps(e) for e in chunk])
        published += len(chunk)

    async def applied() -> bool:
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return await applied_seqs(pool) >= published
        return False

    async def serving() -> bool:
        async with httpx.AsyncClient(base_url=api.base, timeout=5) as c:
            with contextlib.suppress(httpx.TransportError):
                r = await c.get("/v1/orders?limit=1", headers={"Authorization": f"Bearer {key}"})
                return r.status_code == 200
        return False

    try:
        await api.ready()
        async with Traffic(api.base, {"Authorization": f"Bearer {key}"}) as traffic:
            for r in range(rounds):
                await publish(chunks[4 * r])
                await until(applied, 60, "first chunk applied")

                traffic.phase = "redis restart"
                rd.stop()
                await asyncio.sleep(1.0)
                rd.start()
                await rd.wait_ready()
                await publish(chunks[4 * r + 1])
                recoveries["redis"].append(await until(applied, RECOVERY, "after Redis restart"))

                traffic.phase = "terminate"
                killed = await pool.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name IN ('orderview-projector', 'orderview-api')"
                )
                assert killed >= 2, killed
                await publish(chunks[4 * r + 2])
                took = await until(applied, RECOVERY, "projector after pg_terminate_backend")
                took = max(took, await until(serving, RECOVERY, "API after pg_terminate_backend"))
                recoveries["terminate"].append(took)

                traffic.phase = "postgres down"
                await pool.close()
                stack.stop()
                await publish(chunks[4 * r + 3])  # arrives while PostgreSQL is down
                await until(ready_is(api.base, 503), 10, "ready 503 while PostgreSQL is down")
                await asyncio.sleep(2.0)
                assert await ready_status(api.base) == 503
                stack.start()
                traffic.phase = "postgres back"
                pool = await asyncpg.create_pool(pg_url, min_size=1, max_size=2)
                took = await until(ready_is(api.base, 200), RECOVERY, "ready 200 after PostgreSQL")
                took = max(took, await until(applied, RECOVERY, "projector after PostgreSQL"))
                recoveries["postgres"].append(took)
                traffic.phase = "after"
                await asyncio.sleep(0.5)
        assert await outstanding(client, settings) == 0
        assert differences(expected_state(history.events), await table_state(pool)) == []
    finally:
        codes = projector.stop_all()
        logs = projector.logs()
        projector.close()
        api_logs = api.logs()
        api_code = api.stop()
        await client.aclose()
        await pool.close()
    assert codes == {"projector-0": 0}, logs
    assert api_code == 0
    statuses = Counter(status for (_, status) in traffic.seen.elements())
    assert set(statuses) <= {200, 503}, (traffic.seen, api_logs)
    assert traffic.failures == []
    assert not any(s == 503 for (phase, s) in traffic.seen if phase == "start")
    print(
        f"\nserver faults ({'long' if LONG else 'short'}): {rounds} round(s), {published} events, "
        f"{sum(statuses.values())} API requests {dict(statuses)}; recovered in (s) "
        + ", ".join(f"{k} {max(v):.1f}" for k, v in recoveries.items())
        + "; lost 0"
    )


def ready_is(base: str, wanted: int):
    """A check for `until`: does `/health/ready` answer `wanted`?"""

    async def check() -> bool:
        return await ready_status(base) == wanted

    return check


@pytest.mark.parametrize("when", ["idle", "mid-query"])
async def test_a_request_on_a_terminated_connection_is_a_503_not_a_500(
    subprocess_env, database_url, pool, when
):
    env = {**subprocess_env, "ORDERVIEW_LOG_LEVEL": "ERROR", "ORDERVIEW_POOL_MIN_SIZE": "1",
           "ORDERVIEW_POOL_MAX_SIZE": "1"}  # fmt: skip
    async with pool.acquire() as conn:
        _, key = await create_key(conn, "terminated", ["orders:read"])
    headers = {"Authorization": f"Bearer {key}"}
    api_backends = "SELECT pid FROM pg_stat_activity WHERE application_name = 'orderview-api'"
    api_backends += " AND datname = current_database()"
    api = ApiProcess(env)
    try:
        await api.ready()
        async with httpx.AsyncClient(base_url=api.base, timeout=30) as client:
            assert (await client.get("/v1/orders", headers=headers)).status_code == 200
            # Another page than the first request's: the API's cache holds that one, and this
            # request must reach PostgreSQL.
            uncached = "/v1/orders?limit=2"
            async with pool.acquire() as conn, conn.transaction():
                if when == "mid-query":  # the request's query waits on this lock meanwhile
                    await conn.execute(f"LOCK TABLE {ORDERS} IN ACCESS EXCLUSIVE MODE")
                    request = asyncio.create_task(client.get(uncached, headers=headers))
                    waiting = f"{api_backends} AND wait_event_type = 'Lock'"
                    await until(lambda: _fetches(conn, waiting), 10, "the query waits")
                await conn.execute(f"SELECT pg_terminate_backend(pid) FROM ({api_backends}) b")
            if when == "idle":
                await asyncio.sleep(0.2)
                request = asyncio.create_task(client.get(uncached, headers=headers))
            response = await request
        assert response.status_code in (200, 503), (response.text, api.logs())
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "unavailable"
    finally:
        assert api.stop() == 0


async def _fetches(conn, sql: str) -> bool:
    return bool(await conn.fetch(sql))


async def test_requests_while_postgresql_shuts_down_are_503s_never_500s(
    private_servers, subprocess_env, stream_prefix
):
    stack, rd = private_servers
    env = {**subprocess_env, "ORDERVIEW_DATABASE_URL": stack.pg_url, "ORDERVIEW_REDIS_URL": rd.url,
           "ORDERVIEW_STREAMS": stream_prefix, "ORDERVIEW_LOG_LEVEL": "ERROR",
           "ORDERVIEW_POOL_MIN_SIZE": "8"}  # fmt: skip
    db = await asyncpg.connect(stack.pg_url)
    _, key = await create_key(db, "shutdown", ["orders:read"])
    await db.close()
    api = ApiProcess(env)
    seen: Counter[int] = Counter()
    try:
        await api.ready()
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=api.base, headers=headers, timeout=10) as client:

            async def hammer(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    seen[(await client.get("/v1/orders?limit=1")).status_code] += 1

            for _ in range(scale(3, 10)):
                stop = asyncio.Event()
                workers = [asyncio.create_task(hammer(stop)) for _ in range(8)]
                await asyncio.sleep(0.3)
                await asyncio.to_thread(stack.stop)  # connections die under requests in flight
                await asyncio.sleep(0.3)
                stack.start()
                await until(ready_is(api.base, 200), RECOVERY, "ready after PostgreSQL")
                await asyncio.sleep(0.3)
                stop.set()
                await asyncio.gather(*workers)
    finally:
        logs = api.logs()
        assert api.stop() == 0
    assert set(seen) <= {200, 503}, (seen, logs[-3000:])
    assert seen[503] > 0 and seen[200] > 0


async def test_a_projector_working_while_postgresql_shuts_down_keeps_running_and_loses_nothing(
    private_servers, subprocess_env, stream_prefix
):
    stack, rd = private_servers
    env = {**subprocess_env, "ORDERVIEW_DATABASE_URL": stack.pg_url, "ORDERVIEW_REDIS_URL": rd.url,
           "ORDERVIEW_STREAMS": f"{stream_prefix}:0,{stream_prefix}:1,{stream_prefix}:2",
           "ORDERVIEW_LOG_LEVEL": "WARNING", "ORDERVIEW_BATCH_SIZE": "20"}  # fmt: skip
    settings = load_settings(env)
    history = varied(17, orders=scale(600, 2000))
    client = redis.from_url(rd.url)
    projector = Replicas(env, 1)
    try:
        publishing = asyncio.create_task(
            publish_paced(client, settings, [json.dumps(e) for e in history.events], 6)
        )
        for _ in range(scale(6, 12)):
            await asyncio.sleep(0.4)
            await asyncio.to_thread(stack.stop)  # batches die in flight
            assert projector.procs["projector-0"].poll() is None, projector.logs()
            await asyncio.sleep(0.3)
            stack.start()
        await publishing
        await wait_until_caught_up(client, settings, timeout=60)
        assert projector.procs["projector-0"].poll() is None, projector.logs()
        pool = await asyncpg.create_pool(stack.pg_url, min_size=1, max_size=1)
        try:
            state = await table_state(pool)
        finally:
            await pool.close()
        codes = projector.stop_all()
    finally:
        logs = projector.logs()
        projector.close()
        await client.aclose()
    assert codes == {"projector-0": 0}, logs
    assert differences(expected_state(history.events), state) == []
