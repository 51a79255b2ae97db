"""Random histories for the tests: every aggregate valid, aggregates interleaved at random.

`generate` draws the whole vocabulary of events.md; `generate_varied` also moves every field the
API documents show. Faults are added with `services.histories.faults.with_faults`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

STATUS_EVENTS = [
    "order.submitted",
    "order.confirmed",
    "order.started",
    "order.completed",
    "order.cancelled",
]
NAMES = ["John Doe", "Ana María", "Zoë", "李雷", "O'Brien", "x"]
PRICES = ["75.00", 19.99, "100", 12.5, "0.01", "1234.56", "9999999.99", 5]
RATES = ["0.0875", "0", 0.2, "0.055", "0.125", "1", "0.19", "0.333333"]


@dataclass
class History:
    """Valid events in publish order, and poison lines (raw strings) kept apart."""

    events: list[dict] = field(default_factory=list)
    poison: list[str] = field(default_factory=list)

    def lines(self, rng: random.Random | None = None) -> list[str]:
        """Every line to publish: events in order, poison scattered among them."""
        lines = [json.dumps(e) for e in self.events]
        rng = rng or random.Random(0)
        for p in self.poison:
            lines.insert(rng.randrange(len(lines) + 1), p)
        return lines


def _at(base: datetime, minutes: int) -> str:
    return (base + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _item(rng: random.Random, item_id: int) -> dict:
    item = {
        "id": item_id,
        "name": rng.choice(NAMES),
        "quantity": rng.randint(1, 9),
        "unit_price": rng.choice(PRICES),
    }
    if rng.random() < 0.7:
        item["tax_rate"] = rng.choice(RATES)
    if rng.random() < 0.6:
        item["service_id"] = f"svc_{rng.randint(1, 50)}"
    return item


def _order_payloads(rng: random.Random, participants: int) -> list[tuple[str, dict]]:
    """The (type, data) sequence of one order's life."""
    created = {
        "type": rng.choice(["booking", "sale", "enquiry"]),
        "currency": rng.choice(["USD", "EUR", "GBP"]),
    }
    if rng.random() < 0.8:
        created["participant_id"] = rng.randint(1, participants)
    if rng.random() < 0.5:
        created["order_number"] = f"SO-{rng.randint(1, 99999):05d}"
    if rng.random() < 0.5:
        created["event_key"] = rng.choice(["expo-2025", "summit-2024"])
    if rng.random() < 0.5:
        created["location_id"] = rng.choice(["loc_a1", "loc_b2", "LOC_Z"])
    if rng.random() < 0.6:
        created["scheduled_at"] = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T10:00:00Z"
        created["duration"] = rng.choice([15, 30, 60])
    next_item = rng.randint(0, 3)
    created["items"] = [_item(rng, i) for i in range(1, next_item + 1)]
    life: list[tuple[str, dict]] = [("order.created", created)]
    for _ in range(rng.randint(0, 8)):
        roll = rng.random()
        if roll < 0.3:
            next_item += 1
            life.append(("order.item_added", {"item": _item(rng, next_item)}))
        elif roll < 0.4:
            change = {"item_id": rng.randint(1, next_item + 1), "quantity": rng.randint(1, 5)}
            if rng.random() < 0.5:
                change["unit_price"] = rng.choice(PRICES)
            life.append(("order.item_updated", change))
        elif roll < 0.5:
            life.append(("order.item_removed", {"item_id": rng.randint(1, next_item + 1)}))
        elif roll < 0.6:
            details = rng.choice(
                [
                    {"notes": "call first"},
                    {"participant_id": rng.randint(1, participants)},
                    {"location_id": None},
                    {"order_number": "so-1"},
                ]
            )
            life.append(("order.details_changed", details))
        elif roll < 0.85:
            kind = rng.choice(STATUS_EVENTS)
            data = (
                {"reason": "customer request"}
                if kind == "order.cancelled" and rng.random() < 0.5
                else {}
            )
            if kind == "order.submitted" and rng.random() < 0.5:
                data = {"order_number": f"SO-{rng.randint(1, 99999):05d}"}
            life.append((kind, data))
        elif roll < 0.95:
            life.append(
                (
                    "order.payment_status_changed",
                    {"payment_status": rng.choice(["paid", "refunded", "failed", "pending"])},
                )
            )
        else:
            life.append(("order.flagged_for_review", {"by": "fraud-check"}))
    return life


def generate(
    seed: int, *, tenants: int = 2, orders: int = 50, participants: int = 10, renames: int = 2
) -> History:
    """A valid history: each aggregate's events in seq order, aggregates interleaved at random."""
    rng = random.Random(seed)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    lives: list[list[dict]] = []
    for t in range(tenants):
        tenant = f"tenant-{t}"
        for pid in range(1, participants + 1):
            life = []
            for _ in range(1 + rng.randint(0, renames)):
                data = {
                    "name": rng.choice(NAMES) + f" {pid}",
                    "email": rng.choice([f"p{pid}@example.com", None]),
                }
                life.append(("participant.upserted", data))
            lives.append(_stamp(tenant, pid, life))
        for oid in range(1, orders + 1):
            lives.append(_stamp(tenant, oid, _order_payloads(rng, participants)))
    return History(_interleave(rng, lives, lambda n: _at(base, n)))


def _interleave(
    rng: random.Random, lives: list[list[dict]], at: Callable[[int], str]
) -> list[dict]:
    """Every aggregate's events in seq order, aggregates interleaved at random; the n-th event
    (from 1) gets id `evt_<n>` and time `at(n)`."""
    events: list[dict] = []
    cursors = [0] * len(lives)
    live = list(range(len(lives)))
    while live:
        i = rng.choice(live)
        event = lives[i][cursors[i]]
        event["id"] = f"evt_{len(events) + 1}"
        event["at"] = at(len(events) + 1)
        events.append(event)
        cursors[i] += 1
        if cursors[i] == len(lives[i]):
            live.remove(i)
    return events


def _stamp(tenant: str, aggregate_id: int, life: list[tuple[str, dict]]) -> list[dict]:
    return [
        {
            "id": "",
            "type": t,
            "tenant": tenant,
            "aggregate_id": aggregate_id,
            "seq": seq,
            "at": "",
            "data": data,
        }
        for seq, (t, data) in enumerate(life, 1)
    ]


# ---- varied histories: every field of the documents moves ---------------------------------------

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


EDGE_ITEMS = [
    {"unit_price": "0.50", "quantity": 1, "tax_rate": "0.01"},  # tax 0.005 → 0.01
    {"unit_price": 0.1, "quantity": 3, "tax_rate": 0.05},  # tax 0.015 → 0.02
    {"unit_price": "0.05", "quantity": 1, "tax_rate": "0.1"},  # tax 0.005 → 0.01
    {"unit_price": "9999999999.99", "quantity": 3, "tax_rate": "0.333333"},
    {"unit_price": "9999999999.99", "quantity": 123457, "tax_rate": "0.000001"},
    {"unit_price": "9999999999.99", "quantity": 2147483647, "tax_rate": "0.999999"},
    {"unit_price": 0, "quantity": 1, "tax_rate": 1, "colour": "unknown keys are ignored"},
    {"unit_price": "1000", "quantity": 1, "tax_rate": 5e-06},  # JSON `5e-06`; tax 0.005 → 0.01
]
BIGGEST_ID = 2**63 - 1


def _varied_order(rng: random.Random, participants: int) -> list[tuple[str, dict]]:
    """One order's life touching every field the API documents show."""
    life = _order_payloads(rng, participants + 2)  # ids above `participants` have no event
    if rng.random() < 0.4:
        life[0][1]["notes"] = rng.choice(["First-time customer", "x" * 300, "李雷"])
    next_item = max([i["id"] for i in life[0][1]["items"]], default=0) + 10
    for _ in range(rng.randint(0, 6)):
        roll = rng.random()
        if roll < 0.3:
            details = dict(rng.choice(DETAIL_CHANGES))
            if rng.random() < 0.5:
                details["participant_id"] = rng.randint(1, participants + 2)
            life.append(("order.details_changed", details))
        elif roll < 0.45:
            change: dict = {"item_id": rng.randint(1, next_item)}
            for name, values in (
                ("name", NAMES),
                ("tax_rate", RATES),
                ("service_id", [None, "svc_9"]),
                ("unit_price", PRICES),
                ("quantity", [1, 7]),
            ):
                if rng.random() < 0.4:
                    change[name] = rng.choice(values)
            life.append(("order.item_updated", change))
        elif roll < 0.55:  # an item id that may exist: the item is replaced
            life.append(("order.item_added", {"item": _item(rng, rng.randint(1, 3))}))
        elif roll < 0.65:
            next_item += 1
            life.append(("order.item_added", {"item": _item(rng, next_item)}))
        elif roll < 0.75:
            life.append(("order.item_removed", {"item_id": rng.randint(1, next_item)}))
        elif roll < 0.85:
            reason = rng.choice([{}, {"reason": "customer request"}, {"reason": None}])
            life.append(("order.cancelled", reason))
        elif roll < 0.9:
            life.append(("order.submitted", {"order_number": None}))
        elif roll < 0.95:  # amounts at the edges: halves of a cent, the largest prices
            next_item += 1
            item = dict(rng.choice(EDGE_ITEMS), id=next_item, name="edge")
            life.append(("order.item_added", {"item": item}))
        else:
            life.append(("order.note_pinned", {"note": "unknown type"}))
    return life


def _varied_participant(rng: random.Random, pid: int) -> list[tuple[str, dict]]:
    life: list[tuple[str, dict]] = []
    if pid % 5 == 0:  # known first (or only) from an event type this reader does not know
        life.append(("participant.merged", {"into": 1}))
    if pid % 10 == 0:
        return life
    for n in range(1 + rng.randint(0, 3)):
        data: dict = {"name": f"{rng.choice(NAMES)} {pid}.{n}"}
        if rng.random() < 0.7:
            data["email"] = rng.choice([f"p{pid}.{n}@example.com", None])
        life.append(("participant.upserted", data))
        if rng.random() < 0.2:
            life.append(("participant.tagged", {"tag": "vip"}))
    return life


def generate_varied(
    seed: int, *, orders: tuple[int, ...] = (60, 35), participants: int = 10
) -> History:
    """A valid history for tenants `tenant-0`, `tenant-1`, … with `orders[t]` orders each: details
    set and cleared, items added, replaced, updated and removed, unknown types of both kinds,
    participants renamed before and after their orders (some never upserted), and timestamps with
    offsets, fractions and ties."""
    rng = random.Random(seed)
    lives: list[list[dict]] = []
    for t, count in enumerate(orders):
        tenant = f"tenant-{t}"
        for pid in [*range(1, participants + 1), BIGGEST_ID]:
            life = _varied_participant(rng, pid)
            if life:
                lives.append(_stamp(tenant, pid, life))
        for oid in range(1, count + 1):
            lives.append(_stamp(tenant, oid, _varied_order(rng, participants)))
        biggest = _varied_order(rng, participants)
        biggest[0][1]["participant_id"] = BIGGEST_ID
        lives.append(_stamp(tenant, BIGGEST_ID, biggest))
    base = datetime(2024, 1, 1, tzinfo=UTC)

    def at(n: int) -> str:
        # Every third instant repeats (ties in created_at); spelled in UTC or with an offset.
        at = base + timedelta(minutes=(n - 1) // 3, microseconds=rng.choice([0, 0, 250000]))
        offset = timezone(timedelta(hours=rng.choice([0, 2, -5])))
        text = at.astimezone(offset).isoformat().replace("+00:00", "Z")
        return text.replace(".250000", rng.choice([".250000", ".25"]))

    return History(_interleave(rng, lives, at))
