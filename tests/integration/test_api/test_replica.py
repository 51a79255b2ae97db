"""The API on a streaming replica (ORDERVIEW_READ_DATABASE_URL), started by the test: reads,
replication lag as a metric, readiness while lagging, X-Min-Position waiting for replay, and a
replica that goes away and comes back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from orderview.settings import Settings, SettingsError, load_settings
from services.api.app import create_app
from services.api.keys import create_key, set_feature
from tests.integration.test_api.conftest import api_env
from tests.support import projector, run_orderview
from tests.writes import order_created, xadd

HEADER = "X-Min-Position"
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def replica_settings(replica_pair, redis_url) -> Settings:
    env = api_env(replica_pair.primary_url, redis_url)
    env["ORDERVIEW_READ_DATABASE_URL"] = replica_pair.replica_url
    env["ORDERVIEW_MIN_POSITION_WAIT_MS"] = "3000"
    return load_settings(env)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    edge = create_app(settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with edge.app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when="FIRST_COMPLETED")
    try:
        transport = httpx.ASGITransport(app=edge)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica.test") as c:
            yield c
    finally:
        stop.set()
        await task


@pytest.fixture(scope="module")
async def key(replica_pair) -> dict[str, str]:
    conn = await asyncpg.connect(replica_pair.primary_url)
    try:
        _, plaintext = await create_key(conn, "acme", ["orders:read", "service_orders"])
        await set_feature(conn, "acme", "service_orders", True)
        lsn = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    finally:
        await conn.close()
    replica = await asyncpg.connect(replica_pair.replica_url)
    try:  # the key is read from the replica: wait until it has replayed its creation
        for _ in range(600):
            if await replica.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", lsn):
                break
            await asyncio.sleep(0.05)
    finally:
        await replica.close()
    return {"Authorization": f"Bearer {plaintext}"}


@pytest.fixture
async def pair(replica_pair):
    """The replica pair, streaming and replaying again after the test whatever it did."""
    yield replica_pair
    await replica_pair.restore()


async def _write(rclient, settings: Settings) -> tuple[int, str]:
    order_id = next(_ids)
    position = await xadd(rclient, settings.streams[0], order_created("acme", order_id))
    return order_id, f"{settings.streams[0]}@{position}"


async def test_reads_come_from_the_replica_and_wait_for_its_replay(
    pair, key, replica_settings, redis_client
):
    async with running(replica_settings) as client, projector(replica_settings):
        for round_ in range(40):
            order_id, position = await _write(redis_client, replica_settings)
            path, params = [
                (f"/v1/orders/ord_{order_id}", {}),
                ("/v1/orders", {"locationId": f"loc_ryw_{order_id}"}),
                (f"/api/v1/service-orders/{order_id}", {}),
                ("/api/v1/service-orders", {"order_number": f"RYW-{order_id}"}),
            ][round_ % 4]
            response = await client.get(path, params=params, headers={**key, HEADER: position})
            assert response.status_code == 200, response.text
            data = response.json()["data"]
            ids = [o["id"] for o in data] if isinstance(data, list) else [data["id"]]
            assert ids in ([order_id], [f"ord_{order_id}"]), (path, ids)
        # the API's pool is on the replica: it is in recovery
        replica = await asyncpg.connect(pair.replica_url)
        try:
            assert await replica.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await replica.close()


async def test_a_paused_replica_holds_the_wait_and_stays_ready(
    pair, key, replica_settings, redis_client
):
    async with running(replica_settings) as client, projector(replica_settings):
        await pair.pause()
        order_id, position = await _write(redis_client, replica_settings)
        path, headers = f"/v1/orders/ord_{order_id}", {**key, HEADER: position}
        response = await client.get(path, headers=headers)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "position_not_reached"
        assert response.headers["retry-after"] == "1"
        assert (await client.get(path, headers=key)).status_code == 404  # not replayed yet
        assert (await client.get("/health/ready")).status_code == 200  # lag is not unreadiness
        metrics = (await client.get("/metrics")).text
        assert _gauge(metrics, "orderview_api_replica_lag_bytes") > 0
        assert _gauge(metrics, "orderview_api_replica_up") == 1
        waiting = asyncio.create_task(client.get(path, headers=headers))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await pair.resume()
        response = await waiting
        assert response.status_code == 200, response.text
        assert response.json()["data"]["id"] == f"ord_{order_id}"


async def test_a_replica_that_goes_away_is_503_then_recovers(
    pair, key, replica_settings, redis_client
):
    async with running(replica_settings) as client, projector(replica_settings):
        order_id, position = await _write(redis_client, replica_settings)
        path = f"/api/v1/service-orders/{order_id}"
        assert (await client.get(path, headers={**key, HEADER: position})).status_code == 200
        await pair.stop_replica()
        response = await client.get(path, headers=key)
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        assert (await client.get("/health/ready")).status_code == 503
        assert _gauge((await client.get("/metrics")).text, "orderview_api_replica_up") == 0
        await pair.start_replica()
        for _ in range(300):
            response = await client.get(path, headers=key)
            if response.status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert response.status_code == 200, response.text
        order_id, position = await _write(redis_client, replica_settings)
        response = await client.get(f"/v1/orders/ord_{order_id}", headers={**key, HEADER: position})
        assert response.status_code == 200, response.text


def test_a_replica_without_the_primary_stops_the_api_naming_the_variable(replica_pair, redis_url):
    env = api_env(replica_pair.primary_url, redis_url)
    env["ORDERVIEW_READ_DATABASE_URL"] = env.pop("ORDERVIEW_DATABASE_URL")
    with pytest.raises(SettingsError, match="ORDERVIEW_DATABASE_URL"):
        create_app(load_settings(env))
    done = run_orderview(env, "api", "--port", "0")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "ORDERVIEW_DATABASE_URL" in done.stderr


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")
