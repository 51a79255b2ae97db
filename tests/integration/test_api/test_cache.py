"""The document cache against real PostgreSQL, Redis and projector: served without a query, kept
true by the projector's notifications in this process and in others, bypassed while its feed is
down, bounded by ORDERVIEW_CACHE_MB, and never in the way of an access check."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest

from orderview.settings import load_settings
from projections.invalidation import CHANNEL
from projections.tables import ORDERS
from services.api.keys import create_key, revoke_key, set_feature
from tests.chaos import ApiProcess
from tests.integration.test_api.conftest import api_env
from tests.support import projector, publish_lines, wait_until_caught_up

V1, V2 = "/api/v1/service-orders", "/v1/orders"
WAIT = 5.0  # seconds a change may take to show (it takes milliseconds; this is a machine's stall)


def ev(tenant: str, kind: str, aggregate: int, seq: int, data: dict) -> str:
    return json.dumps(
        {
            "id": f"{tenant}-{kind}-{aggregate}-{seq}",
            "type": kind,
            "tenant": tenant,
            "aggregate_id": aggregate,
            "seq": seq,
            "at": f"2024-02-01T00:00:{seq:02d}Z",
            "data": data,
        }
    )


def created(tenant: str, order: int, participant: int | None = None, items: int = 1) -> str:
    data: dict = {"type": "sale", "currency": "EUR", "order_number": f"SO-{order}"}
    if participant is not None:
        data["participant_id"] = participant
    data["items"] = [
        {"id": i, "name": f"item {i} " + "x" * 200, "quantity": 1, "unit_price": "10"}
        for i in range(1, items + 1)
    ]
    return ev(tenant, "order.created", order, 1, data)


def renamed(tenant: str, participant: int, seq: int, name: str) -> str:
    data = {"name": name, "email": f"{participant}@example.com"}
    return ev(tenant, "participant.upserted", participant, seq, data)


async def edit(db, column: str, tenant: str, order: int, old: str, new: str) -> None:
    """Change a stored document by hand: a change nobody announces."""
    await db.execute(
        f"UPDATE {ORDERS} SET {column} = convert_to(replace(convert_from({column}, 'UTF8'), $3, $4),"
        " 'UTF8') WHERE tenant = $1 AND id = $2",
        tenant, order, old, new,
    )  # fmt: skip


async def until(check, timeout: float = WAIT):
    """Await `check()` until it returns a true value; that value (fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.02)


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match[1])


@pytest.fixture(scope="module")
async def cached(db, rclient, api_settings, app, make_key):
    """Tenant `cachet`: orders 1-3 naming participant 5, projected; a key for it."""
    lines = [renamed("cachet", 5, 1, "Ann")] + [created("cachet", o, 5) for o in (1, 2, 3)]
    await publish_lines(rclient, api_settings, lines)
    async with projector(api_settings):
        await wait_until_caught_up(rclient, api_settings)
    await until(lambda: _true(app.app.state.cache.online))
    return await make_key("cachet", "service_orders,orders:read")


async def _true(value) -> bool:
    return bool(value)


async def status_of(client, path: str, headers: dict) -> str:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]["status"]


async def test_a_hot_get_is_served_from_memory_until_invalidated(app, client, db, cached):
    cache = app.app.state.cache
    path = f"{V2}/ord_1"
    assert await status_of(client, path, cached) == "draft"
    hits = cache.hits
    assert await status_of(client, path, cached) == "draft"
    assert cache.hits == hits + 1
    # A change PostgreSQL holds but nobody announced: the cache does not ask PostgreSQL.
    await edit(db, "doc_v2", "cachet", 1, "draft", "confirmed")
    for _ in range(3):
        assert await status_of(client, path, cached) == "draft"
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, '{"t":"cachet","o":[1],"p":[]}')
    await until(lambda: _is(client, path, cached, "confirmed"))
    # The metrics show it.
    text = (await client.get("/metrics")).text
    assert metric(text, "orderview_api_cache_hits_total") >= 4
    assert metric(text, "orderview_api_cache_misses_total") >= 1
    assert (
        0
        < metric(text, "orderview_api_cache_bytes")
        <= metric(text, "orderview_api_cache_limit_bytes")
    )
    assert metric(text, "orderview_api_cache_listening") == 1


async def _is(client, path, headers, status: str) -> bool:
    return await status_of(client, path, headers) == status


async def test_a_participant_rename_reaches_cached_orders(
    app, client, rclient, api_settings, cached
):
    v1 = f"{V1}/3?include=participant"
    v2 = f"{V2}/ord_3"

    async def names() -> tuple[str, str]:
        one = (await client.get(v1, headers=cached)).json()["data"]["participant"]["name"]
        two = (await client.get(v2, headers=cached)).json()["data"]["customerName"]
        return one, two

    assert await names() == ("Ann", "Ann")
    hits = app.app.state.cache.hits
    assert await names() == ("Ann", "Ann")
    assert app.app.state.cache.hits == hits + 2
    await publish_lines(rclient, api_settings, [renamed("cachet", 5, 2, "Bea")])
    async with projector(api_settings):
        await wait_until_caught_up(rclient, api_settings)
    await until(lambda: _names_are(names, ("Bea", "Bea")))


async def _names_are(names, expected) -> bool:
    return await names() == expected


async def test_a_lost_listen_connection_bypasses_the_cache_then_recovers(app, client, db, cached):
    cache, feed = app.app.state.cache, app.app.state.cache_feed
    path = f"{V1}/1"
    await client.get(path, headers=cached)
    hits = cache.hits
    await client.get(path, headers=cached)
    assert cache.hits == hits + 1
    old_pid = feed.backend_pid
    assert await db.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    # A change nobody announces (the projector's notification would be lost with the connection):
    # it shows at once, because the cache is emptied and bypassed until it listens again.
    await edit(db, "doc_v1", "cachet", 1, "SO-1", "SO-1-lost")

    async def shows_change() -> bool:
        response = await client.get(path, headers=cached)
        return response.json()["data"]["order_number"] == "SO-1-lost"

    await until(shows_change)
    await until(lambda: _true(cache.online and feed.backend_pid != old_pid))
    listening = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE 'LISTEN%'",
        feed.backend_pid,
    )
    assert listening == 1
    # Recovered: served from memory again, and invalidated through the new connection.
    assert await shows_change()
    hits = cache.hits
    assert await shows_change()
    assert cache.hits == hits + 1
    await edit(db, "doc_v1", "cachet", 1, "SO-1-lost", "SO-1")
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, '{"t":"cachet","o":[1],"p":[]}')
    await until(lambda: _not(shows_change))


async def _not(check) -> bool:
    return not await check()


async def test_a_revoked_key_or_disabled_feature_is_refused_within_5_seconds(
    app, client, db, cached
):
    async with db.acquire() as conn:
        key_id, plaintext = await create_key(conn, "cachet", ["service_orders", "orders:read"])
    headers = {"Authorization": f"Bearer {plaintext}"}
    for path in (f"{V1}/1", f"{V2}/ord_1", f"{V1}/1", f"{V2}/ord_1"):
        assert (await client.get(path, headers=headers)).status_code == 200
    async with db.acquire() as conn:
        await revoke_key(conn, key_id)
    started = time.monotonic()

    async def refused() -> bool:
        return (await client.get(f"{V2}/ord_1", headers=headers)).status_code == 401

    await until(refused, timeout=5.5)
    assert time.monotonic() - started <= 5.5
    assert (await client.get(f"{V1}/1", headers=headers)).status_code == 401

    # The feature of dialect 1: its cached documents are not served once it is off.
    assert (await client.get(f"{V1}/2", headers=cached)).status_code == 200
    async with db.acquire() as conn:
        await set_feature(conn, "cachet", "service_orders", False)
    try:

        async def forbidden() -> bool:
            return (await client.get(f"{V1}/2", headers=cached)).status_code == 403

        await until(forbidden, timeout=5.5)
    finally:
        async with db.acquire() as conn:
            await set_feature(conn, "cachet", "service_orders", True)


# ---- real API processes --------------------------------------------------------------------------


async def _metrics(base: str) -> str:
    async with httpx.AsyncClient(base_url=base) as c:
        return (await c.get("/metrics")).text


async def test_an_update_reaches_two_api_processes(database_url, redis_url, rclient, make_key):
    env = api_env(database_url, redis_url)
    settings = load_settings(env)
    headers = await make_key("cache2", "service_orders,orders:read")
    await publish_lines(rclient, settings, [created("cache2", 1)])
    async with projector(settings):
        await wait_until_caught_up(rclient, settings)
        apis = [ApiProcess(env), ApiProcess(env)]
        try:
            for api in apis:
                await api.ready()
            clients = [httpx.AsyncClient(base_url=api.base) for api in apis]
            for c in clients:
                await until(lambda c=c: _is(c, f"{V2}/ord_1", headers, "draft"))
                await until(lambda c=c: _is(c, f"{V2}/ord_1", headers, "draft"))
            for api in apis:
                assert metric(await _metrics(api.base), "orderview_api_cache_hits_total") >= 1
            await publish_lines(rclient, settings, [ev("cache2", "order.cancelled", 1, 2, {})])
            await wait_until_caught_up(rclient, settings)
            started = time.monotonic()
            for c in clients:
                await until(lambda c=c: _is(c, f"{V2}/ord_1", headers, "cancelled"))
            print(
                f"visible in both processes {1000 * (time.monotonic() - started):.1f} ms after ack"
            )
            for c in clients:
                await c.aclose()
        finally:
            for api in apis:
                assert api.stop() == 0, api.logs()


async def test_the_bound_is_kept_and_0_turns_the_cache_off(
    database_url, redis_url, rclient, make_key, db
):
    env = api_env(database_url, redis_url)
    settings = load_settings(env)
    headers = await make_key("cachebound", "service_orders,orders:read")
    count = 200
    await publish_lines(
        rclient, settings, [created("cachebound", o, items=3) for o in range(1, count + 1)]
    )
    async with projector(settings):
        await wait_until_caught_up(rclient, settings)
    bounded = ApiProcess({**env, "ORDERVIEW_CACHE_MB": "1"})
    off = ApiProcess({**env, "ORDERVIEW_CACHE_MB": "0"})
    try:
        await bounded.ready()
        await off.ready()
        async with httpx.AsyncClient(base_url=bounded.base) as c:
            for _ in range(2):
                for o in range(1, count + 1):
                    for include in ("", "items", "participant", "items,participant"):
                        response = await c.get(f"{V1}/{o}?include={include}", headers=headers)
                        assert response.status_code == 200
            # A sweep larger than the cache evicts in LRU order; the latest stays.
            response = await c.get(f"{V1}/{count}?include=items,participant", headers=headers)
            assert response.status_code == 200
            text = await _metrics(bounded.base)
        assert metric(text, "orderview_api_cache_limit_bytes") == 1024 * 1024
        assert 0 < metric(text, "orderview_api_cache_bytes") <= 1024 * 1024
        assert metric(text, "orderview_api_cache_misses_total") > count * 4  # evictions: misses
        assert metric(text, "orderview_api_cache_hits_total") >= 1

        async with httpx.AsyncClient(base_url=off.base) as c:
            assert await _is(c, f"{V2}/ord_1", headers, "draft")
            await edit(db, "doc_v2", "cachebound", 1, "draft", "pending")
            assert await _is(c, f"{V2}/ord_1", headers, "pending")  # no cache: read each time
            text = await _metrics(off.base)
        assert metric(text, "orderview_api_cache_limit_bytes") == 0
        assert metric(text, "orderview_api_cache_hits_total") == 0
        assert metric(text, "orderview_api_cache_listening") == 0
        assert "document cache off" in off.logs()
    finally:
        assert bounded.stop() == 0, bounded.logs()
        assert off.stop() == 0, off.logs()


async def _numbers(client, path: str, headers: dict) -> list[str]:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    return [order["order_number"] for order in response.json()["data"]]


async def test_a_hot_list_page_is_served_from_memory_until_its_tenant_changes(
    app, client, db, cached
):
    cache = app.app.state.cache
    path = f"{V1}?limit=100"
    before = await _numbers(client, path, cached)
    assert "SO-3" in before
    hits = cache.hits
    assert await _numbers(client, path, cached) == before
    assert cache.hits == hits + 1
    # Unannounced, the change stays unseen; any change of the tenant, even of an order this page
    # does not show (it could enter the page), drops the page.
    await edit(db, "doc_v1", "cachet", 3, '"SO-3"', '"SO-3b"')
    assert await _numbers(client, path, cached) == before
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, '{"t":"cachet","o":[424242],"p":[]}')
    await until(lambda: _has(client, path, cached, "SO-3b"))
    # Another tenant's change leaves the page where it is.
    hits = cache.hits
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, '{"t":"elsewhere","o":[3],"p":[]}')
    await asyncio.sleep(0.2)
    assert "SO-3b" in await _numbers(client, path, cached)
    assert cache.hits == hits + 1
    await edit(db, "doc_v1", "cachet", 3, '"SO-3b"', '"SO-3"')
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, '{"t":"cachet"}')
    await until(lambda: _has(client, path, cached, "SO-3"))


async def _has(client, path: str, headers: dict, number: str) -> bool:
    return number in await _numbers(client, path, headers)
