"""Every list query shape is an index scan on 100 000 orders: EXPLAIN never shows a Seq Scan."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from projections.tables import ORDERS, PARTICIPANTS
from services.api.cursors import Position
from services.api.queries import CREATED, SORTS, Filter, ListQuery, bind_key, key_of, list_sql

FILL = f"""
INSERT INTO {ORDERS} (tenant, id, seq, type, status, payment_status, currency, order_number,
    event_key, participant_id, location_id, scheduled_at, duration, subtotal, tax_total, total,
    submitted_at, created_at, updated_at, state, doc_v1, items_v1, doc_v2)
SELECT 't' || (g % 10), g, 1, (ARRAY['booking', 'sale', 'enquiry'])[g % 3 + 1],
    (ARRAY['draft', 'pending', 'confirmed', 'in_progress', 'completed', 'cancelled'])[g % 6 + 1],
    'pending', 'EUR',
    CASE WHEN g % 7 = 0 THEN NULL ELSE 'SO-' || (g % 5000) END,
    'ev' || (g % 50), CASE WHEN g % 5 = 0 THEN NULL ELSE g % 2000 END, 'loc_' || (g % 100),
    CASE WHEN g % 4 = 0 THEN NULL ELSE timestamptz '2024-01-01' + g * interval '1 minute' END,
    60, g % 1000, 0, g % 1000,
    CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2024-01-01' + g * interval '1 second' END,
    timestamptz '2024-01-01' + (g % 50000) * interval '1 second',
    timestamptz '2024-01-01' + (g % 50000) * interval '1 second',
    '\\x00', convert_to('{{"id":' || g || '}}', 'UTF8'), '[]', '{{}}'
FROM generate_series(1, 100000) AS g
"""


@pytest.fixture(scope="module")
async def big(db):
    await db.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}")
    await db.execute(FILL)
    await db.execute(f"ANALYZE {ORDERS}")
    yield
    await db.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}")


SAMPLE = {
    "text": "SO-2500",
    "numeric": "500",
    "timestamp": key_of(CREATED, datetime(2024, 1, 1, 3, tzinfo=UTC)),
}
V1_FILTERS = {
    "none": (),
    "event_key": (Filter("event_key", "eq", "ev7"),),
    "status": (Filter("status", "eq", "confirmed"),),
    "statuses": (Filter("status", "any", ["confirmed", "draft"]),),
    "participant": (Filter("participant_id", "eq", 42),),
    "order_number": (Filter("order_number", "eq", "SO-77"),),
    "all": (
        Filter("event_key", "eq", "ev7"),
        Filter("status", "any", ["confirmed", "draft"]),
        Filter("participant_id", "eq", 42),
        Filter("order_number", "eq", "SO-77"),
    ),
}
START, END = datetime(2024, 1, 10, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC)
V2_FILTERS = {
    "none": (),
    "status": (Filter("status", "eq", "pending"),),
    "type": (Filter("type", "eq", "sale"),),
    "customer": (Filter("participant_id", "eq", 42),),
    "location": (Filter("location_id", "eq", "loc_7"),),
    "start": (Filter("scheduled_at", "ge", START),),
    "end": (Filter("scheduled_at", "le", END),),
    "range": (Filter("scheduled_at", "ge", START), Filter("scheduled_at", "le", END)),
    "created_after": (Filter("created_at", "gt", START),),
    "all": (
        Filter("status", "eq", "pending"),
        Filter("type", "eq", "sale"),
        Filter("participant_id", "eq", 42),
        Filter("location_id", "eq", "loc_7"),
        Filter("scheduled_at", "ge", START),
        Filter("scheduled_at", "le", END),
        Filter("created_at", "gt", START),
    ),
}


def shapes():
    for sort in SORTS.values():
        positions = [None, Position(1, SAMPLE[sort.kind], 5000)]
        if sort.nullable:
            positions.append(Position(1, None, 5000))
        for descending in (False, True):
            for name, filters in V1_FILTERS.items():
                for after in positions:
                    where = "first" if after is None else ("null" if after.key is None else "key")
                    query = ListQuery("v1", "t3", filters, sort, descending, 25, ("items",), after)
                    yield pytest.param(query, id=f"v1-{sort.name}-{descending}-{name}-{where}")
    for name, filters in V2_FILTERS.items():
        for after in (None, Position(1, SAMPLE["timestamp"], 5000)):
            query = ListQuery("v2", "t3", filters, CREATED, True, 25, (), after)
            yield pytest.param(query, id=f"v2-{name}-{'first' if after is None else 'key'}")


@pytest.mark.parametrize("query", list(shapes()))
async def test_a_list_query_never_scans_the_table_sequentially(big, db, query):
    bind_key(query.sort, query.after.key if query.after else None)
    sql, args = list_sql(query)

    plan = "\n".join(r[0] for r in await db.fetch("EXPLAIN " + sql, *args))

    assert "Seq Scan" not in plan, plan
    assert "Index" in plan, plan
