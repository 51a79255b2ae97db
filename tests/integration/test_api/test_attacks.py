"""Attacks: other tenants' ids and cursors, tampered and replayed cursors, hostile sort values,
SQL in strings, revoked keys and disabled features (seen within 5 seconds)."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from projections.tables import ORDERS
from services.api.auth import KEY_LOOKUPS
from services.api.keys import create_key, revoke_key, set_feature
from tests.integration.test_api.conftest import expected_ids, order_id, walk

V1 = "/api/v1/service-orders"
V2 = "/v1/orders"


async def _cursor(client, headers, path=V1, **params) -> str:
    body = (await client.get(path, params={"limit": 3, **params}, headers=headers)).json()
    return (
        body["meta"]["pagination"]["next_cursor"]
        if "meta" in body
        else body["pagination"]["nextCursor"]
    )


@pytest.mark.parametrize("path", [V1, V2])
async def test_a_tenant_sees_only_its_own_orders(loaded, client, globex, path):
    orders = await walk(client, path, {"limit": 4}, globex)

    assert sorted(order_id(o) for o in orders) == sorted(s.id for s in loaded["globex"])


async def test_a_filter_naming_another_tenants_participant_finds_only_own_orders(
    loaded, client, globex
):
    orders = await walk(client, V1, {"participant_id": 2}, globex)

    keep = lambda s: s.participant_id == 2  # noqa: E731
    assert [o["id"] for o in orders] == expected_ids(loaded["globex"], "created_at", True, keep)


@pytest.mark.parametrize(
    ("made_with", "used_with"),
    [
        pytest.param({}, {"status": "draft"}, id="other-filter"),
        pytest.param({"status": "draft"}, {"status": "pending"}, id="other-filter-value"),
        pytest.param({"status": "draft"}, {}, id="filter-dropped"),
        pytest.param({"sort": "total"}, {"sort": "status"}, id="other-sort"),
        pytest.param({"sort": "total"}, {"sort": "total", "order": "asc"}, id="other-direction"),
    ],
)
async def test_a_cursor_used_with_another_query_is_a_400(
    loaded, client, acme, made_with, used_with
):
    cursor = await _cursor(client, acme, **made_with)

    response = await client.get(V1, params={**used_with, "cursor": cursor}, headers=acme)

    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == "cursor"


async def test_a_cursor_may_change_limit_and_include(loaded, client, acme):
    cursor = await _cursor(client, acme, sort="total")

    response = await client.get(
        V1,
        params={"sort": "total", "limit": 50, "include": "items", "cursor": cursor},
        headers=acme,
    )

    assert response.status_code == 200
    assert [o["id"] for o in response.json()["data"]] == expected_ids(
        loaded["acme"], "total", True
    )[3:53]


async def test_another_tenants_cursor_is_a_400(loaded, client, acme, globex):
    for path in (V1, V2):
        cursor = await _cursor(client, acme, path)
        response = await client.get(path, params={"cursor": cursor}, headers=globex)
        assert response.status_code == 400
        assert "`cursor`" in response.json()["error"]["message"]


async def test_a_cursor_of_one_dialect_is_refused_by_the_other(loaded, client, acme):
    v1 = await _cursor(client, acme, V1)
    v2 = await _cursor(client, acme, V2)

    assert (await client.get(V2, params={"cursor": v1}, headers=acme)).status_code == 400
    assert (await client.get(V1, params={"cursor": v2}, headers=acme)).status_code == 400


def _tampered(cursor: str) -> list[str]:
    flip = {c: ("A" if c != "A" else "B") for c in cursor}
    return [
        cursor[:-1] + flip[cursor[-1]],
        flip[cursor[0]] + cursor[1:],
        cursor[: len(cursor) // 2]
        + flip[cursor[len(cursor) // 2]]
        + cursor[len(cursor) // 2 + 1 :],
        cursor[:-2],
        cursor + "AA",
        cursor * 2,
        "",
    ]


async def test_a_tampered_cursor_is_a_400(loaded, client, acme):
    cursor = await _cursor(client, acme, sort="order_number")

    for bad in _tampered(cursor):
        response = await client.get(
            V1, params={"sort": "order_number", "cursor": bad}, headers=acme
        )
        assert response.status_code == 400, bad
        assert response.json()["error"]["parameter"] == "cursor"


def _same_bytes_spelled_otherwise(cursor: str) -> list[str]:
    """Other spellings of the cursor's bytes: padding, a stray character, the standard alphabet,
    and a last character differing only in the bits base64 leaves unused."""
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    spellings = [cursor + "=" * (4 - len(cursor) % 4), cursor[:4] + "." + cursor[4:], " " + cursor]
    spellings.append(cursor.replace("-", "+").replace("_", "/"))
    for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_":
        other = cursor[:-1] + c
        if other != cursor and base64.urlsafe_b64decode(other + "=" * (-len(other) % 4)) == raw:
            spellings.append(other)
    return [s for s in spellings if s != cursor]


@pytest.mark.parametrize("limit", [1, 2, 3])
@pytest.mark.parametrize("path", [V1, V2])
async def test_a_cursor_spelled_otherwise_is_a_400(loaded, client, acme, path, limit):
    cursor = await _cursor(client, acme, path, limit=limit)

    for other in _same_bytes_spelled_otherwise(cursor):
        response = await client.get(path, params={"limit": limit, "cursor": other}, headers=acme)
        assert response.status_code == 400, other
        assert "`cursor`" in response.json()["error"]["message"]
    response = await client.get(path, params={"limit": limit, "cursor": cursor}, headers=acme)
    assert response.status_code == 200


async def test_a_replayed_cursor_gives_the_same_page(loaded, client, acme):
    cursor = await _cursor(client, acme, sort="submitted_at")
    params = {"sort": "submitted_at", "limit": 3, "cursor": cursor}

    first = await client.get(V1, params=params, headers=acme)
    again = await client.get(V1, params=params, headers=acme)

    assert first.json()["data"] == again.json()["data"]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({"sort": "total; DROP TABLE read_model.orders"}, id="sort-statement"),
        pytest.param({"sort": "total DESC"}, id="sort-with-direction"),
        pytest.param({"sort": "created_at,id"}, id="sort-list"),
        pytest.param({"sort": "(SELECT 1)"}, id="sort-subquery"),
        pytest.param({"sort": "doc_v1"}, id="sort-unlisted-column"),
        pytest.param({"order": "DESC; SELECT pg_sleep(10)"}, id="order-statement"),
        pytest.param({"order": "DESC NULLS FIRST"}, id="order-nulls"),
        pytest.param({"include": "state"}, id="include-column"),
        pytest.param({"include": "items_v1"}, id="include-raw-column"),
        pytest.param({"limit": "1;"}, id="limit-statement"),
    ],
)
async def test_hostile_sort_order_include_and_limit_are_400s(loaded, client, acme, params):
    response = await client.get(V1, params=params, headers=acme)

    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == next(iter(params))


@pytest.mark.parametrize(
    ("path", "params"),
    [
        pytest.param(V1, {"event_key": "' OR 1=1 --"}, id="v1-event-key"),
        pytest.param(V1, {"order_number": "x'); DROP TABLE read_model.orders; --"}, id="v1-number"),
        pytest.param(V2, {"locationId": "loc_a' OR 'a'='a"}, id="v2-location"),
        pytest.param(V1, {"order_number": "\\'; SELECT 1"}, id="backslash"),
    ],
)
async def test_sql_in_strings_is_just_a_value_that_matches_nothing(
    loaded, client, acme, db, path, params
):
    response = await client.get(path, params=params, headers=acme)

    assert response.status_code == 200
    assert response.json()["data"] == []
    assert await db.fetchval(f"SELECT count(*) FROM {ORDERS}") == 75


async def _until(client, path, headers, status: int, limit: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < limit + 1:
        if (await client.get(path, headers=headers)).status_code == status:
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} did not answer {status}")


@pytest.mark.parametrize("by", ["plaintext", "id"])
async def test_a_revoked_key_stops_working_within_5_seconds(loaded, client, db, by):
    async with db.acquire() as conn:
        key_id, plaintext = await create_key(conn, "acme", ["orders:read"])
    headers = {"Authorization": f"Bearer {plaintext}"}
    assert (await client.get(V2, headers=headers)).status_code == 200  # now cached

    async with db.acquire() as conn:
        assert await revoke_key(conn, plaintext if by == "plaintext" else key_id) == key_id

    assert await _until(client, V2, headers, 401) <= 5


async def test_a_disabled_feature_is_seen_within_5_seconds(loaded, client, db, make_key):
    headers = await make_key("flipper", "service_orders")
    assert (await client.get(V1, headers=headers)).status_code == 200

    async with db.acquire() as conn:
        await set_feature(conn, "flipper", "service_orders", False)

    assert await _until(client, V1, headers, 403) <= 5
    assert (await client.get(V1, headers=headers)).json()["error"]["code"] == "feature_disabled"


async def test_many_requests_with_one_key_cost_one_lookup(loaded, client, acme):
    await asyncio.sleep(1.1)  # the module's cache holds keys for 1 second
    before = KEY_LOOKUPS._value.get()

    responses = await asyncio.gather(*(client.get(V2, headers=acme) for _ in range(50)))

    assert {r.status_code for r in responses} == {200}
    assert KEY_LOOKUPS._value.get() - before == 1
