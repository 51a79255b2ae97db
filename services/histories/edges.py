"""Values at the edges of events.md: what a `Workload` with `variety` draws now and then instead of
the realistic value. Realistic producers seldom send them; the contract allows every one.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

BIGGEST_ID = 2**63 - 1  # the largest aggregate id the contract allows
GHOSTS = 1_000_000  # participant ids above this are named by orders and never get an event
NAMES = ["John Doe", "Ana María", "Zoë", "李雷", "O'Brien", "x"]
PRICES = ["75.00", 19.99, "100", 12.5, "0.01", "1234.56", "9999999.99", 5]
RATES = ["0.0875", "0", 0.2, "0.055", "0.125", "1", "0.19", "0.333333"]
NOTES = ["First-time customer", "x" * 300, "李雷", 'Café ☕ "quoted"']
STATUS_EVENTS = ["order.submitted", "order.confirmed", "order.started", "order.completed"]
OPTIONAL = ("order_number", "event_key", "participant_id", "location_id", "scheduled_at")
OPTIONAL += ("duration", "notes", "items")

# Details set and cleared, with the values the API tests filter on.
DETAIL_CHANGES = [
    {"notes": "call first"},
    {"notes": None},
    {"order_number": "so-1"},
    {"order_number": None},
    {"event_key": "expo-2025"},
    {"event_key": None},
    {"location_id": "loc_b2"},
    {"location_id": None},
    {"scheduled_at": "2024-03-01T09:30:00+02:00", "duration": 45},
    {"scheduled_at": None},
    {"duration": None},
    {"duration": 0},
    {"participant_id": None},
    {"notes": 'Café ☕ "quoted"', "unknown_key": {"ignored": True}},
]

# Amounts at the edges: halves of a cent, the largest prices and quantities, numbers in JSON.
EDGE_AMOUNTS = [
    {"unit_price": "0.50", "quantity": 1, "tax_rate": "0.01"},  # tax 0.005 → 0.01
    {"unit_price": 0.1, "quantity": 3, "tax_rate": 0.05},  # tax 0.015 → 0.02
    {"unit_price": "0.05", "quantity": 1, "tax_rate": "0.1"},  # tax 0.005 → 0.01
    {"unit_price": "9999999999.99", "quantity": 3, "tax_rate": "0.333333"},
    {"unit_price": "9999999999.99", "quantity": 123457, "tax_rate": "0.000001"},
    {"unit_price": "9999999999.99", "quantity": 2147483647, "tax_rate": "0.999999"},
    {"unit_price": 0, "quantity": 1, "tax_rate": 1, "colour": "unknown keys are ignored"},
    {"unit_price": "1000", "quantity": 1, "tax_rate": 5e-06},  # JSON `5e-06`; tax 0.005 → 0.01
]


def item(rng: random.Random, item_id: int) -> dict:
    """An item with prices as strings or numbers, optional fields absent, or amounts at the edge."""
    if rng.random() < 0.2:
        return dict(rng.choice(EDGE_AMOUNTS), id=item_id, name="edge")
    item = {"id": item_id, "name": rng.choice(NAMES), "quantity": rng.randint(1, 9)}
    item["unit_price"] = rng.choice(PRICES)
    if rng.random() < 0.7:
        item["tax_rate"] = rng.choice(RATES)
    if rng.random() < 0.6:
        item["service_id"] = rng.choice([None, f"svc_{rng.randint(1, 50)}"])
    return item


def item_change(rng: random.Random, item_id: int) -> dict:
    """An `order.item_updated` payload that replaces any subset of an item's fields."""
    change: dict = {"item_id": item_id}
    for name, values in (
        ("name", NAMES),
        ("tax_rate", RATES),
        ("service_id", [None, "svc_9"]),
        ("unit_price", PRICES),
        ("quantity", [1, 7]),
    ):
        if rng.random() < 0.4:
            change[name] = rng.choice(values)
    return change


def created(rng: random.Random, data: dict) -> dict:
    """An `order.created` payload with some optional fields absent and others at the edge."""
    data = {k: v for k, v in data.items() if k not in OPTIONAL or rng.random() < 0.6}
    if rng.random() < 0.4:
        data["notes"] = rng.choice(NOTES)
    if rng.random() < 0.4:
        data["scheduled_at"] = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z"
    return data


def instant(rng: random.Random, clock: datetime) -> str:
    """`clock` to the second (so events share instants), at times with a fraction spelled two
    ways, in UTC or with an offset."""
    at = clock.replace(microsecond=rng.choice([0, 0, 250000]))
    offset = timezone(timedelta(hours=rng.choice([0, 2, -5])))
    text = at.astimezone(offset).isoformat().replace("+00:00", "Z")
    return text.replace(".250000", rng.choice([".250000", ".25"]))
