"""Tenant attacks on a real `orderview api` process, beyond tests/integration/test_api/test_attacks.py
and test_errors.py (which cover lists walked per tenant, another tenant's cursor, cursors reused with
other filters, seven tampered forms of one cursor, ten hostile sort/order/include/limit values, SQL in
three string filters, 401s and 403s, revocation on one endpoint):

* every order id of the other tenant, on both get endpoints, with include: 404, no data;
* every filter of both dialects given the other tenant's values: only own orders;
* every single-bit flip of cursors of both dialects, and payloads swapped between cursors of other
  queries and of the other tenant: 400;
* hostile strings (SQL, NUL, 10 000 characters, unicode, wildcards) in every parameter of every
  endpoint, path ids included: never a 500, never another tenant's order, tables intact;
* revoked and wrong-scope keys on every endpoint carrying valid cursors and foreign ids: 401 / 403.

    .venv/bin/pytest tests/reliability/test_tenant_attacks.py -s
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from collections.abc import AsyncIterator
from itertools import product
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from orderview.settings import load_settings
from projections.tables import ORDERS
from services.api.keys import create_key, revoke_key, set_feature
from services.histories import History, Workload
from tests.chaos import ApiProcess
from tests.conftest import RUN_ID
from tests.support import project

V1, V2 = "/api/v1/service-orders", "/v1/orders"
ALPHA, BETA = "alpha", "beta"
HOSTILE = [
    "' OR 1=1 --",
    "x'); DROP TABLE read_model.orders; --",
    "1 OR 1=1",
    "1; SELECT pg_sleep(5)",
    "beta' OR tenant = 'alpha",
    "%",
    "_",
    "*",
    "\\",
    "a\x00b",
    "\x00",
    "$1",
    "::text",
    "ord_1 UNION SELECT * FROM read_model.api_keys",
    "cust_1 OR 1=1",
    "cust_-1",
    "ord_-1",
    "9223372036854775808",
    "-9223372036854775809",
    "1e3",
    "ÅÄÖ 李雷 🚀",
    "\u202e\ufeff",
    "x" * 10_000,
    "2024-13-45",
    "2024-01-01T25:00:00Z",
    "../../etc/passwd",
    "%00",
    "null",
    "",
]
PARAMETERS = {
    V1: ["event_key", "status", "participant_id", "order_number", "sort", "order", "include",
         "limit", "cursor"],
    V2: ["limit", "cursor", "status", "type", "customerId", "locationId", "startDate", "endDate",
         "createdAfter"],
}  # fmt: skip


def _tenant_events(tenant: str, seed: int, offset: int) -> list[dict]:
    """A realistic history of `tenant`, its order and participant ids shifted by `offset`."""
    events = History.of(Workload(seed, tenants=(tenant,), orders_per_tenant=40)).events
    for e in events:
        e["aggregate_id"] += offset
        e["id"] = f"{tenant}-{e['id']}"
        if isinstance(e["data"].get("participant_id"), int):
            e["data"]["participant_id"] += offset
    return events


class World:
    """Two tenants' orders, keys of each kind, and a running API."""

    def __init__(self, dsn: str, api: ApiProcess, keys: dict[str, str], ids, values):
        self.dsn, self.api, self.keys, self.ids, self.values = dsn, api, keys, ids, values

    def client(self, key: str) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.keys[key]}"}
        return httpx.AsyncClient(base_url=self.api.base, headers=headers, timeout=30)


@pytest.fixture(scope="module")
async def world(database_url, redis_url) -> AsyncIterator[World]:
    prefix = f"ovtest:{RUN_ID}:attacks"
    env = {"ORDERVIEW_DATABASE_URL": database_url, "ORDERVIEW_REDIS_URL": redis_url,
           "ORDERVIEW_STREAMS": f"{prefix}:orders:events", "ORDERVIEW_BLOCK_MS": "100",
           "ORDERVIEW_CURSOR_SECRET": "test-cursor-secret-0123456789",
           "ORDERVIEW_KEY_CACHE_SECONDS": "0", "ORDERVIEW_METRICS_PORT": "0",
           "ORDERVIEW_LOG_LEVEL": "ERROR"}  # fmt: skip
    events = _tenant_events(ALPHA, 1, 0) + _tenant_events(BETA, 2, 1000)
    conn = await asyncpg.connect(database_url)
    client = redis.from_url(redis_url)
    try:
        await conn.execute(f"DELETE FROM {ORDERS} WHERE tenant IN ('{ALPHA}', '{BETA}')")
        await project(client, load_settings(env), [json.dumps(e) for e in events])
        keys = {}
        for tenant in (ALPHA, BETA):
            _, keys[tenant] = await create_key(conn, tenant, ["service_orders", "orders:read"])
            await set_feature(conn, tenant, "service_orders", True)
        _, keys["v2-only"] = await create_key(conn, ALPHA, ["orders:read"])
        _, keys["v1-only"] = await create_key(conn, ALPHA, ["service_orders"])
        _, keys["revoked"] = await create_key(conn, ALPHA, ["service_orders", "orders:read"])
        rows = await conn.fetch(
            f"SELECT tenant, id, participant_id, location_id, order_number, event_key"
            f" FROM {ORDERS} WHERE tenant IN ('{ALPHA}', '{BETA}')"
        )
    finally:
        await client.aclose()
    ids = {t: {r["id"] for r in rows if r["tenant"] == t} for t in (ALPHA, BETA)}
    values = {t: [r for r in rows if r["tenant"] == t] for t in (ALPHA, BETA)}
    api = ApiProcess(
        {**{k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}, **env}
    )
    try:
        await api.ready()
        yield World(database_url, api, keys, ids, values)
    finally:
        await conn.close()
        assert api.stop() == 0


def order_ids(body: dict) -> list[int]:
    """The order ids in a 200 body of either dialect (list or one)."""
    data = body["data"]
    docs = data if isinstance(data, list) else [data]
    return [
        d["id"] if isinstance(d["id"], int) else int(d["id"].removeprefix("ord_")) for d in docs
    ]


def check(response: httpx.Response, world: World, tenant: str) -> None:
    """Never a 500; a 200 shows only the tenant's orders and participants."""
    assert response.status_code < 500, (response.request.url, response.text[:300])
    if response.status_code == 200 and response.request.url.path not in ("/health/ready",):
        body = response.json()
        assert set(order_ids(body)) <= world.ids[tenant], response.request.url
        other = BETA if tenant == ALPHA else ALPHA
        assert other not in response.text


async def test_every_order_of_the_other_tenant_is_a_404_on_both_get_endpoints(world):
    async with world.client(ALPHA) as alpha:
        for oid in sorted(world.ids[BETA]):
            for path in (f"{V1}/{oid}?include=items,participant", f"{V2}/ord_{oid}"):
                response = await alpha.get(path)
                assert response.status_code == 404, path
                assert response.json()["error"]["code"] == "not_found"
        for oid in sorted(world.ids[ALPHA])[:10]:
            response = await alpha.get(f"{V1}/{oid}?include=items,participant")
            assert response.status_code == 200
            check(response, world, ALPHA)


async def test_filters_given_the_other_tenants_values_find_only_own_orders(world):
    rows = world.values[BETA]
    filters = [
        (V1, "participant_id", str(r["participant_id"])) for r in rows if r["participant_id"]
    ]
    filters += [
        (V2, "customerId", f"cust_{r['participant_id']}") for r in rows if r["participant_id"]
    ]
    filters += [(V2, "locationId", r["location_id"]) for r in rows if r["location_id"]]
    filters += [(V1, "order_number", r["order_number"]) for r in rows if r["order_number"]]
    filters += [(V1, "event_key", r["event_key"]) for r in rows if r["event_key"]]
    assert len({f[1] for f in filters}) == 5
    async with world.client(ALPHA) as alpha:
        for path, name, value in sorted(set(filters)):
            response = await alpha.get(path, params={name: value, "limit": 100})
            assert response.status_code == 200
            check(response, world, ALPHA)
            if name in (
                "participant_id",
                "customerId",
            ):  # beta's participant ids are alpha's + 1000
                assert response.json()["data"] == []


async def _cursor(client: httpx.AsyncClient, path: str, params: dict) -> str:
    body = (await client.get(path, params={**params, "limit": 2})).json()
    return body["meta"]["pagination"]["next_cursor"] if path == V1 else body["pagination"]["nextCursor"]  # fmt: skip


def _raw(cursor: str) -> bytes:
    return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))


def _text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("path", [V1, V2])
async def test_every_single_bit_flip_of_a_cursor_is_a_400(world, path):
    params = {"sort": "total", "order": "asc"} if path == V1 else {"status": "confirmed"}
    async with world.client(ALPHA) as alpha:
        raw = _raw(await _cursor(alpha, path, params))
        flipped = Counter()
        for i, bit in product(range(len(raw)), range(8)):
            bad = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1 :]
            response = await alpha.get(path, params={**params, "cursor": _text(bad)})
            flipped[response.status_code] += 1
        assert flipped == {400: len(raw) * 8}


async def test_payloads_swapped_between_cursors_of_other_queries_and_tenants_are_400s(world):
    queries = [{"sort": "total"}, {"sort": "total", "status": "confirmed"}, {"sort": "created_at"}]
    async with world.client(ALPHA) as alpha, world.client(BETA) as beta:
        cursors = [(q, _raw(await _cursor(alpha, V1, q))) for q in queries]
        cursors += [(q, _raw(await _cursor(beta, V1, q))) for q in queries]
        swapped = 0
        for (query, a), (_, b) in product(cursors, cursors):
            if a == b:
                continue
            for forged in (a[:-16] + b[-16:], b[:-16] + a[-16:]):
                response = await alpha.get(V1, params={**query, "cursor": _text(forged)})
                assert response.status_code == 400, (query, forged)
                swapped += 1
        assert swapped == 2 * 6 * 5


@pytest.mark.parametrize("path", [V1, V2, f"{V1}/1", f"{V2}/ord_1"])
async def test_hostile_strings_in_every_parameter_are_never_a_500_nor_foreign_data(world, path):
    names = PARAMETERS.get(path, ["include"] if path.startswith(V1) else ["any"])
    async with world.client(ALPHA) as alpha:
        statuses = Counter()
        for name, value in product(names, HOSTILE):
            response = await alpha.get(path, params={name: value})
            check(response, world, ALPHA)
            statuses[response.status_code] += 1
        assert set(statuses) <= {200, 400, 404}, statuses
    conn = await asyncpg.connect(world.dsn)
    try:
        count = await conn.fetchval(
            f"SELECT count(*) FROM {ORDERS} WHERE tenant IN ('{ALPHA}', '{BETA}')"
        )
    finally:
        await conn.close()
    assert count == len(world.ids[ALPHA]) + len(world.ids[BETA])


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
async def test_hostile_path_ids_are_never_a_500(world, value):
    async with world.client(ALPHA) as alpha:
        for path in (V1, V2):
            response = await alpha.get(f"{path}/{quote(value, safe='')}")
            check(response, world, ALPHA)
            assert response.status_code in (400, 404), (path, value, response.text[:200])


@pytest.mark.parametrize("key", ["revoked", "v2-only", "v1-only"])
async def test_revoked_and_wrong_scope_keys_get_no_data_on_any_endpoint(world, key):
    async with world.client(ALPHA) as alpha:
        cursors = {V1: await _cursor(alpha, V1, {}), V2: await _cursor(alpha, V2, {})}
    if key == "revoked":
        conn = await asyncpg.connect(world.dsn)
        try:
            await revoke_key(conn, world.keys["revoked"])
        finally:
            await conn.close()
    expected = {
        "revoked": {V1: 401, V2: 401},
        "v2-only": {V1: 403, V2: 200},
        "v1-only": {V1: 200, V2: 403},
    }[key]
    oid = min(world.ids[ALPHA])
    async with world.client(key) as client:
        for path in (V1, V2):
            one = f"{V1}/{oid}" if path == V1 else f"{V2}/ord_{oid}"
            for url, params in ((path, {"cursor": cursors[path]}), (one, {})):
                response = await client.get(url, params=params)
                assert response.status_code == expected[path], (key, url)
                if expected[path] != 200:
                    assert "data" not in response.json(), response.text
