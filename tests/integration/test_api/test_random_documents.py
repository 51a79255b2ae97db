"""Random histories end to end: the real projector folds them, the real HTTP app serves them, and
every order in both dialects equals an independent rendering (tests/rendering.py) of the
independent model (tests/model.py): single orders, and every list page walked with its cursor.
Most events arrive while every order is being read in every form, so the API's document cache
holds states that later events change: what it serves afterwards must still be the final state."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from orderview.settings import load_settings
from projections.tables import ORDERS, PARTICIPANTS
from services.histories import POISON_IDS, varied, with_faults
from tests.integration.test_api.conftest import api_env
from tests.model import expected_state
from tests.rendering import amounts, diff, order_v2, rendered, served, service_order
from tests.support import projector, publish_lines, wait_until_caught_up

# Part of the smoke subset CI runs on embedded PostgreSQL and Valkey (about 2 s).
pytestmark = pytest.mark.smoke

V1, V2 = "/api/v1/service-orders", "/v1/orders"
TENANTS = ("tenant-0", "tenant-1")
ORDERS_PER_TENANT = (40, 25)
BIGGEST_ID = 2**63 - 1  # the id of each tenant's last order, and of a participant
SORTS = ("order_number", "total", "status", "submitted_at", "created_at")


def most_common(orders: dict[int, dict], name: str) -> str:
    """The value of a field that most orders share, so that a filter on it finds several."""
    return Counter(o[name] for o in orders.values() if o[name]).most_common(1)[0][0]


def expected_orders(model: tuple[dict, dict], tenant: str) -> dict[int, dict]:
    orders, _ = model
    return {oid: order for (t, oid), order in orders.items() if t == tenant}


def v1_doc(model, tenant, oid, include=("items", "participant")) -> dict:
    orders, participants = model
    return rendered(service_order(tenant, oid, orders[(tenant, oid)], participants, include))


def v2_doc(model, tenant, oid) -> dict:
    orders, participants = model
    return rendered(order_v2(tenant, oid, orders[(tenant, oid)], participants))


def body(response) -> dict:
    assert response.status_code == 200, response.text
    return json.loads(response.content, parse_float=Decimal)


async def walk(client, path: str, params: dict, headers: dict) -> list[dict]:
    """Every document of a list, page by page through the dialect's next cursor."""
    docs: list[dict] = []
    params = dict(params)
    for _ in range(500):
        page = body(await client.get(path, params=params, headers=headers))
        docs += page["data"]
        pagination = page["meta"]["pagination"] if path == V1 else page["pagination"]
        cursor = pagination["next_cursor" if path == V1 else "nextCursor"]
        assert pagination["has_more" if path == V1 else "hasMore"] is (cursor is not None)
        if cursor is None:
            return docs
        params["cursor"] = cursor
    raise AssertionError("the walk did not end")


def ordered(orders: dict[int, dict], key, descending: bool) -> list[int]:
    """Ids in API order: by value (code point for strings), nulls last, ties by id; one direction."""
    present = [(key(o), oid) for oid, o in orders.items() if key(o) is not None]
    absent = [oid for oid, o in orders.items() if key(o) is None]
    return [oid for _, oid in sorted(present, reverse=descending)] + sorted(
        absent, reverse=descending
    )


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _instant(at: datetime) -> str:
    """An instant spelled with an offset of +02:00."""
    return at.astimezone(timezone(timedelta(hours=2))).isoformat()


def _on_or_after(order: dict, text: str) -> bool:
    return order["scheduled_at"] is not None and order["scheduled_at"] >= _ts(text)


def _before(order: dict, text: str) -> bool:
    return order["scheduled_at"] is not None and order["scheduled_at"] < _ts(text)


def compare(problems: list[str], where: str, expected: list[dict], got: list[dict]) -> None:
    got = [served(d) for d in got]
    exp_ids, got_ids = [d["id"] for d in expected], [d["id"] for d in got]
    if exp_ids != got_ids:
        problems.append(f"{where}: ids expected {exp_ids}, got {got_ids}")
        by_id = {d["id"]: d for d in got}
        got = [by_id.get(d["id"], {}) for d in expected]
    for exp, doc in zip(expected, got, strict=True):
        problems += [f"{where} {exp['id']}{line}" for line in diff(exp, doc)]


@pytest.fixture(scope="module")
async def keys(make_key) -> dict[str, dict[str, str]]:
    return {t: await make_key(t, "service_orders,orders:read") for t in TENANTS}


@pytest.mark.parametrize("seed", [101, 202, 303])
async def test_random_history_is_served_as_the_contract_renders_it(
    seed, db, rclient, database_url, redis_url, app, client, keys
):
    history = varied(seed, orders=ORDERS_PER_TENANT)
    rng = random.Random(seed)
    # Poison: invalid copies of valid events, and invalid orders that must stay absent.
    faulty = with_faults(history, seed, duplicates=0.15, swaps=0.1, reverse=8, poison=30)
    env = api_env(database_url, redis_url)
    env["ORDERVIEW_STREAMS"] = ",".join(f"{env['ORDERVIEW_STREAMS']}:{n}" for n in range(3))
    await db.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}")
    await project_while_reading(client, keys, rclient, load_settings(env), faulty.lines(rng), seed)
    model = expected_state(history.events)
    cache = app.app.state.cache
    hits = cache.hits

    problems: list[str] = []
    for tenant, count in zip(TENANTS, ORDERS_PER_TENANT, strict=True):
        headers = keys[tenant]
        orders = expected_orders(model, tenant)
        newest = ordered(orders, lambda o: o["created_at"], descending=True)

        # Lists in their default order, every page, documents whole.
        got = await walk(client, V1, {"include": "items,participant", "limit": 7}, headers)
        compare(problems, f"{tenant} v1 list", [v1_doc(model, tenant, i) for i in newest], got)
        got = await walk(client, V1, {"limit": 100}, headers)
        compare(problems, f"{tenant} v1 bare", [v1_doc(model, tenant, i, ()) for i in newest], got)
        got = await walk(client, V2, {"limit": 9}, headers)
        compare(problems, f"{tenant} v2 list", [v2_doc(model, tenant, i) for i in newest], got)

        # Each order alone, in its dialect's envelope; dialect 1 with each choice of include.
        for oid in sorted(orders):
            one = body(await client.get(f"{V1}/{oid}?include=items,participant", headers=headers))
            assert set(one) == {"data", "meta"} and set(one["meta"]) == {"request_id"}, one
            compare(problems, f"{tenant} v1 get", [v1_doc(model, tenant, oid)], [one["data"]])
            include = rng.choice([(), ("items",), ("participant",), ("participant", "items")])
            params = {"include": ",".join(include)} if include else {}
            one = body(await client.get(f"{V1}/{oid}", params=params, headers=headers))
            expected = v1_doc(model, tenant, oid, include)
            compare(problems, f"{tenant} v1 get {params}", [expected], [one["data"]])
            one = body(await client.get(f"{V2}/ord_{oid}", headers=headers))
            assert set(one) == {"success", "data"} and one["success"] is True, one
            compare(problems, f"{tenant} v2 get", [v2_doc(model, tenant, oid)], [one["data"]])

        # Orders that do not exist for this tenant: poisoned creations, the other tenant's ids.
        poisoned = list(range(POISON_IDS, POISON_IDS + 11))
        for oid in [*poisoned, max(ORDERS_PER_TENANT) + 1, *range(count + 1, 41)]:
            assert oid not in orders
            for path in (f"{V1}/{oid}", f"{V2}/ord_{oid}"):
                response = await client.get(path, headers=headers)
                if response.status_code != 404:
                    problems.append(f"{tenant} {path}: expected 404, got {response.status_code}")

        # Every sort, both directions, walked with a cursor: the order of ids.
        for sort in SORTS:
            for direction in ("ASC", "DESC"):
                key = (
                    (lambda o: amounts(o)["total"]) if sort == "total" else (lambda o, s=sort: o[s])
                )
                want = ordered(orders, key, descending=direction == "DESC")
                got = await walk(
                    client, V1, {"sort": sort, "order": direction, "limit": 8}, headers
                )
                if [d["id"] for d in got] != want:
                    problems.append(
                        f"{tenant} v1 sort={sort} {direction}: expected {want}, got {[d['id'] for d in got]}"
                    )

        middle = orders[newest[len(newest) // 2]]["created_at"]  # shared by other orders (ties)
        event_key, location = most_common(orders, "event_key"), most_common(orders, "location_id")
        # Filters on the fields the history moves (participant changes and clearing included).
        filters = [
            (V1, {"participant_id": p}, lambda o, p=p: o["participant_id"] == p) for p in (1, 5, 11)
        ]
        filters += [
            (V2, {"customerId": f"cust_{p}"}, lambda o, p=p: o["participant_id"] == p)
            for p in (3, BIGGEST_ID)
        ]
        filters += [
            (V1, {"status": "cancelled,draft"}, lambda o: o["status"] in ("cancelled", "draft")),
            (V1, {"event_key": event_key}, lambda o, k=event_key: o["event_key"] == k),
            (V1, {"order_number": "so-1"}, lambda o: o["order_number"] == "so-1"),
            (V2, {"locationId": location}, lambda o, k=location: o["location_id"] == k),
            (V2, {"type": "sale", "status": "pending"}, lambda o: o["type"] == "sale" and o["status"] == "pending"),
            (V2, {"startDate": "2024-03-01T09:30:00+02:00"}, lambda o: _on_or_after(o, "2024-03-01T07:30:00Z")),
            (V2, {"startDate": "2024-05-10"}, lambda o: _on_or_after(o, "2024-05-10T00:00:00Z")),
            (V2, {"endDate": "2024-03-01"}, lambda o: _before(o, "2024-03-02T00:00:00Z")),
            (V2, {"endDate": "2024-03-01T07:30:00Z"}, lambda o: _before(o, "2024-03-01T07:30:00.000001Z")),
            (V2, {"createdAfter": _instant(middle)}, lambda o, m=middle: o["created_at"] > m),
            (V2, {"createdAfter": "2024-01-01"}, lambda o: o["created_at"] > _ts("2024-01-01T00:00:00Z")),
        ]  # fmt: skip
        for path, params, keep in filters:
            want = [i for i in newest if keep(orders[i])]
            got = [d["id"] for d in await walk(client, path, {**params, "limit": 5}, headers)]
            got = [i if isinstance(i, int) else int(i.removeprefix("ord_")) for i in got]
            if got != want:
                problems.append(f"{tenant} {path} {params}: expected {want}, got {got}")

    assert not problems, f"seed {seed}: {len(problems)} differences\n" + "\n".join(problems[:60])
    assert cache.hits > hits, "the gets above were to be served from the document cache"


async def project_while_reading(client, keys, rclient, settings, lines: list[str], seed: int):
    """Publish a third of the lines, then the rest in bursts while every order is read again and
    again in every form (filling each API document cache with states that later events change);
    return once the projector has settled everything and stopped."""
    rng = random.Random(seed * 7)
    cut = len(lines) // 3
    await publish_lines(rclient, settings, lines[:cut])
    async with projector(settings):

        async def trickle() -> None:
            rest = lines[cut:]
            while rest:
                size = rng.randint(1, 40)
                await publish_lines(rclient, settings, rest[:size])
                rest = rest[size:]
                await asyncio.sleep(rng.choice([0, 0.005, 0.02]))

        arriving = asyncio.create_task(trickle())
        passes = 0
        while not arriving.done() or passes < 2:
            await read_everything(client, keys)
            passes += 1
        await arriving
        await wait_until_caught_up(rclient, settings)


async def read_everything(client, keys) -> None:
    """Every order id of every tenant, in both dialects and every choice of include."""
    for tenant in TENANTS:
        for oid in range(1, max(ORDERS_PER_TENANT) + 1):
            for include in ("", "items", "participant", "items,participant"):
                await client.get(f"{V1}/{oid}?include={include}", headers=keys[tenant])
            await client.get(f"{V2}/ord_{oid}", headers=keys[tenant])
