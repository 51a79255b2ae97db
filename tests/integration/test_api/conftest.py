"""The read API against real PostgreSQL and Redis: a catalogue of orders projected by the real
projector, the application with its lifespan, and keys made the way `orderview keys` makes them."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import httpx
import pytest
import redis.asyncio as redis

from orderview.settings import Settings, load_settings
from projections.tables import ORDERS, PARTICIPANTS
from services.api.app import create_app
from services.api.keys import create_key, set_feature
from tests.conftest import RUN_ID
from tests.support import project

STATUSES = ("draft", "pending", "confirmed", "in_progress", "completed", "cancelled")
TYPES = ("booking", "sale", "enquiry")
BASE = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass
class Spec:
    """An order as the test means it to be; the expected lists are computed from these."""

    tenant: str
    id: int
    type: str
    status: str
    order_number: str | None
    event_key: str | None
    participant_id: int | None
    location_id: str | None
    scheduled_at: datetime | None
    created_at: datetime
    submitted_at: datetime | None
    items: list[tuple[str, int]] = field(default_factory=list)  # (unit price, quantity)

    @property
    def total(self) -> Decimal:
        return sum((Decimal(p) * q for p, q in self.items), Decimal(0))


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def events_of(spec: Spec) -> list[dict]:
    """The event history that makes the order `spec` describes."""
    data: dict = {"type": spec.type, "currency": "EUR"}
    for name in ("order_number", "event_key", "participant_id", "location_id"):
        if getattr(spec, name) is not None:
            data[name] = getattr(spec, name)
    if spec.scheduled_at is not None:
        data["scheduled_at"] = _stamp(spec.scheduled_at)
    data["items"] = [
        {"id": i, "name": f"item {i}", "quantity": q, "unit_price": p, "service_id": f"svc_{i}"}
        for i, (p, q) in enumerate(spec.items, 1)
    ]
    steps = [("order.created", spec.created_at, data)]
    later = spec.created_at + timedelta(hours=1)
    if spec.submitted_at is not None:
        steps.append(("order.submitted", spec.submitted_at, {}))
    path = {
        "confirmed": ["order.confirmed"],
        "in_progress": ["order.confirmed", "order.started"],
        "completed": ["order.confirmed", "order.started", "order.completed"],
        "cancelled": ["order.cancelled"],
    }.get(spec.status, [])
    steps += [(t, later, {}) for t in path]
    return [
        {
            "id": f"{spec.tenant}-{spec.id}-{seq}",
            "type": kind,
            "tenant": spec.tenant,
            "aggregate_id": spec.id,
            "seq": seq,
            "at": _stamp(at),
            "data": payload,
        }
        for seq, (kind, at, payload) in enumerate(steps, 1)
    ]


def participant_events(tenant: str) -> list[dict]:
    """Participants 1 and 2 exist; participant 3 is named by orders but has no event."""
    return [
        {
            "id": f"{tenant}-p{pid}",
            "type": "participant.upserted",
            "tenant": tenant,
            "aggregate_id": pid,
            "seq": 1,
            "at": "2023-12-31T00:00:00Z",
            "data": {"name": name, "email": f"p{pid}@example.com"},
        }
        for pid, name in ((1, "Ana María"), (2, "John Doe"))
    ]


ORDER_NUMBERS = [None, None, "SO-1", "SO-1", "SO-10", "SO-2", "so-1", "Zeta", "éclair", "ä", "A"]
PRICES = ["5.00", "10", "19.99", "100.5"]


def catalogue(tenant: str, count: int, seed: int) -> list[Spec]:
    """Orders with nulls and ties in every sort column and every filter value present."""
    rnd = random.Random(seed)
    specs = []
    for order_id in range(1, count + 1):
        status = STATUSES[order_id % len(STATUSES)]
        created = BASE + timedelta(minutes=rnd.randrange(12) * 7)
        submitted = None
        if status != "draft" and not (status == "cancelled" and order_id % 2):
            submitted = created + timedelta(minutes=rnd.choice([5, 5, 30]))
        day = BASE + timedelta(days=rnd.randrange(5))
        scheduled = rnd.choice(
            [None, day, day + timedelta(hours=23, minutes=59, seconds=59), day + timedelta(hours=9)]
        )
        specs.append(
            Spec(
                tenant=tenant,
                id=order_id,
                type=rnd.choice(TYPES),
                status=status,
                order_number=rnd.choice(ORDER_NUMBERS),
                event_key=rnd.choice([None, "expo", "summit", "Expo"]),
                participant_id=rnd.choice([None, 1, 2, 3]),
                location_id=rnd.choice([None, "loc_a", "loc_b"]),
                scheduled_at=scheduled,
                created_at=created,
                submitted_at=submitted,
                items=[(rnd.choice(PRICES), rnd.randint(1, 2)) for _ in range(rnd.randint(0, 2))],
            )
        )
    return specs


def lines_of(specs: list[Spec], tenants: list[str]) -> list[str]:
    events = [e for t in tenants for e in participant_events(t)]
    events += [e for s in specs for e in events_of(s)]
    return [json.dumps(e) for e in events]


# ---- expected orderings, computed here (not by SQL) -------------------------------------------


def sort_value(spec: Spec, sort: str):
    return spec.total if sort == "total" else getattr(spec, sort)


def expected_ids(specs: list[Spec], sort: str, descending: bool, keep: Callable = bool) -> list:
    """Ids in API order: non-null values by (value, id), then nulls by id, both in the direction."""
    chosen = [s for s in specs if keep(s)]
    present = [s for s in chosen if sort_value(s, sort) is not None]
    absent = [s for s in chosen if sort_value(s, sort) is None]
    present.sort(key=lambda s: (sort_value(s, sort), s.id), reverse=descending)
    absent.sort(key=lambda s: s.id, reverse=descending)
    return [s.id for s in present + absent]


# ---- fixtures -----------------------------------------------------------------------------------

_prefixes = iter(range(1, 1000))


def api_env(database_url: str, redis_url: str) -> dict[str, str]:
    prefix = f"ovtest:{RUN_ID}:api{next(_prefixes)}"
    return {
        "ORDERVIEW_DATABASE_URL": database_url,
        "ORDERVIEW_REDIS_URL": redis_url,
        "ORDERVIEW_STREAMS": f"{prefix}:orders:events",
        "ORDERVIEW_CONSUMER_NAME": "api-test",
        "ORDERVIEW_METRICS_PORT": "0",
        "ORDERVIEW_BLOCK_MS": "100",
        "ORDERVIEW_CURSOR_SECRET": "test-cursor-secret-0123456789",
        "ORDERVIEW_KEY_CACHE_SECONDS": "1",
    }


@pytest.fixture(scope="module")
def api_settings(database_url: str, redis_url: str) -> Settings:
    """Settings of this module: its own streams."""
    return load_settings(api_env(database_url, redis_url))


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database (the read tables are left as the module's fixtures made them)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="module")
async def rclient(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
async def loaded(db, rclient, api_settings) -> dict[str, list[Spec]]:
    """The catalogue of tenants `acme` (60 orders) and `globex` (15), projected."""
    await db.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}")
    specs = {"acme": catalogue("acme", 60, seed=1), "globex": catalogue("globex", 15, seed=2)}
    all_specs = specs["acme"] + specs["globex"]
    await project(rclient, api_settings, lines_of(all_specs, list(specs)))
    return specs


@pytest.fixture(scope="module")
async def app(api_settings):
    """The application, its lifespan running."""
    edge = create_app(api_settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:  # the lifespan starts and ends in one task
        async with edge.app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    await asyncio.wait([task, asyncio.create_task(started.wait())], return_when="FIRST_COMPLETED")
    yield edge
    stop.set()
    await task


@pytest.fixture(scope="module")
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orderview.test") as c:
        yield c


@pytest.fixture(scope="module")
def make_key(db) -> Callable:
    """`await make_key(tenant, scopes, features=...)` → headers carrying a new key."""

    async def make(tenant: str, scopes: str, features: tuple[str, ...] = ("service_orders",)):
        async with db.acquire() as conn:
            _, plaintext = await create_key(conn, tenant, scopes.split(","))
            for feature in features:
                await set_feature(conn, tenant, feature, True)
        return {"Authorization": f"Bearer {plaintext}"}

    return make


@pytest.fixture(scope="module")
async def acme(make_key) -> dict[str, str]:
    """Headers with a key of tenant acme carrying both scopes."""
    return await make_key("acme", "service_orders,orders:read")


@pytest.fixture(scope="module")
async def globex(make_key) -> dict[str, str]:
    return await make_key("globex", "service_orders,orders:read")


async def walk(client: httpx.AsyncClient, path: str, params: dict, headers: dict) -> list[dict]:
    """Every order of a list, following the next cursor of either dialect to the end."""
    orders: list[dict] = []
    params = dict(params)
    for _ in range(1000):
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        orders += body["data"]
        if "meta" in body:
            cursor = body["meta"]["pagination"]["next_cursor"]
            assert body["meta"]["pagination"]["has_more"] is (cursor is not None)
        else:
            cursor = body["pagination"]["nextCursor"]
            assert body["pagination"]["hasMore"] is (cursor is not None)
        if cursor is None:
            return orders
        params["cursor"] = cursor
    raise AssertionError("the walk did not end")


def order_id(order: dict) -> int:
    """The numeric id of an order of either dialect."""
    value = order["id"]
    return value if isinstance(value, int) else int(value.removeprefix("ord_"))
