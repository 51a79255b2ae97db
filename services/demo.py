"""A generated, seeded demo history for `orderview dev`: two tenants, every field of both dialects.

Pure: returns the `event` values (JSON bytes) in publishing order; nothing here does I/O. Per
aggregate, seqs run 1, 2, 3… in time order; participants are renamed, some orders are created before
their participant's first event, a few events are delivered twice, a few of an unknown `order.*`
type, and a few entries are poison (each on an aggregate of its own, so nothing waits behind it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from services.histories import poison_entries

TENANTS = ("acme", "globex")
ORDERS_PER_TENANT = 2000
PARTICIPANTS_PER_TENANT = 120
SEED = 20240120
START = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
SPAN = timedelta(days=180)

_FIRST = ["Ana", "John", "Mei", "Olu", "Sven", "Zoë", "Ravi", "Lena", "Tomás", "Aiko", "Noor"]
_LAST = ["Doe", "Müller", "Okafor", "Silva", "Tanaka", "Nguyen", "Kowalski", "O'Brien", "Haddad"]
_SERVICES = [
    ("svc_consult", "Consultation", "75.00"),
    ("svc_workshop", "Workshop seat", "249.00"),
    ("svc_ticket", "Day ticket", "19.99"),
    ("svc_coffee", "Café ☕", "3.50"),
    ("svc_room", "Meeting room (hour)", "40"),
    ("svc_followup", "Follow-up call", "45.5"),
]
_RATES = ["0", "0.07", "0.0875", "0.19", "0.2"]
_EVENT_KEYS = ["summit-2025", "expo-2025", "spring-fair", "webinar-q2"]
_LOCATIONS = ["loc_berlin", "loc_lisbon", "loc_osaka", "loc_online", "loc_def456"]
_NOTES = ["First-time customer", "Needs wheelchair access", "Invoice to HQ", "Vegetarian lunch"]
_REASONS = ["Customer request", "Duplicate booking", "Payment failed", "Event moved"]

_encode = msgspec.json.Encoder().encode


@dataclass
class _Stream:
    """Events of one tenant, keyed for sorting by time; seqs counted per aggregate."""

    rng: random.Random
    tenant: str
    events: list[tuple[datetime, str, int, int, str, dict]] = field(default_factory=list)
    seqs: dict[tuple[str, int], int] = field(default_factory=dict)

    def emit(self, at: datetime, type_: str, aggregate_id: int, data: dict) -> None:
        key = (type_.partition(".")[0], aggregate_id)
        seq = self.seqs[key] = self.seqs.get(key, 0) + 1
        self.events.append((at, self.tenant, aggregate_id, seq, type_, data))


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _item(rng: random.Random, item_id: int) -> dict:
    service_id, name, price = rng.choice(_SERVICES)
    return {
        "id": item_id,
        "service_id": service_id,
        "name": name,
        "quantity": rng.randint(1, 4),
        "unit_price": price,
        "tax_rate": rng.choice(_RATES),
    }


def _participants(s: _Stream) -> None:
    for pid in range(1, PARTICIPANTS_PER_TENANT + 1):
        first, last = s.rng.choice(_FIRST), s.rng.choice(_LAST)
        at = START + SPAN * s.rng.random() * 0.5  # some orders exist before their participant
        email = f"{first.lower()}.{pid}@{s.tenant}.example.com".replace("ë", "e").replace("á", "a")
        s.emit(at, "participant.upserted", pid, {"name": f"{first} {last}", "email": email})
        if pid % 5 == 0:  # renames reach every order of the participant
            at += timedelta(days=s.rng.randint(1, 60))
            new = f"{first} {s.rng.choice(_LAST)}-{last}"
            s.emit(at, "participant.upserted", pid, {"name": new, "email": email})


def _created(s: _Stream, oid: int) -> dict:
    rng = s.rng
    data: dict = {
        "type": rng.choice(["booking", "booking", "sale", "enquiry"]),
        "currency": rng.choice(["EUR", "EUR", "USD", "GBP"]),
        "event_key": rng.choice(_EVENT_KEYS),
        "location_id": rng.choice(_LOCATIONS),
        "items": [_item(rng, i) for i in range(1, rng.randint(1, 3) + 1)],
    }
    if rng.random() < 0.9:
        data["participant_id"] = rng.randint(1, PARTICIPANTS_PER_TENANT)
    if rng.random() < 0.8:
        data["scheduled_at"] = _stamp(START + SPAN * rng.random() + timedelta(days=14))
        data["duration"] = rng.choice([30, 45, 60, 90, 120, 480])
    if rng.random() < 0.5:
        data["notes"] = rng.choice(_NOTES)
    if rng.random() < 0.3:
        data["order_number"] = f"SO-{oid:05d}"
    return data


def _lifecycle(s: _Stream, oid: int, at: datetime, created: dict) -> None:
    rng = s.rng

    def later() -> datetime:
        nonlocal at
        at += timedelta(minutes=rng.randint(1, 3000))
        return at

    next_item = len(created["items"]) + 1
    if rng.random() < 0.3:
        s.emit(later(), "order.item_added", oid, {"item": _item(rng, next_item)})
    if rng.random() < 0.2:
        s.emit(later(), "order.item_updated", oid, {"item_id": 1, "quantity": rng.randint(2, 9)})
    if rng.random() < 0.1 and len(created["items"]) > 1:
        s.emit(later(), "order.item_removed", oid, {"item_id": 2})
    if rng.random() < 0.15:
        s.emit(later(), "order.details_changed", oid, {"notes": rng.choice(_NOTES)})
    if rng.random() < 0.02:
        s.emit(later(), "order.note_added", oid, {"text": "an event type this build ignores"})
    if rng.random() < 0.15:
        return  # stays a draft
    s.emit(later(), "order.submitted", oid, {"order_number": f"SO-{oid:05d}"})
    roll = rng.random()
    if roll < 0.15:
        s.emit(later(), "order.cancelled", oid, {"reason": rng.choice(_REASONS)})
        return
    if roll < 0.25:
        return  # pending
    s.emit(later(), "order.confirmed", oid, {})
    s.emit(later(), "order.payment_status_changed", oid, {"payment_status": "paid"})
    roll = rng.random()
    if roll < 0.35:
        s.emit(later(), "order.started", oid, {})
        s.emit(later(), "order.completed", oid, {})
    elif roll < 0.45:
        s.emit(later(), "order.started", oid, {})
    elif roll < 0.52:
        s.emit(later(), "order.cancelled", oid, {})
        status = rng.choice(["refunded", "failed"])
        s.emit(later(), "order.payment_status_changed", oid, {"payment_status": status})


def _orders(s: _Stream) -> None:
    for oid in range(1, ORDERS_PER_TENANT + 1):
        at = START + SPAN * s.rng.random()
        created = _created(s, oid)
        s.emit(at, "order.created", oid, created)
        _lifecycle(s, oid, at, created)


def demo_history(seed: int = SEED, tenants: tuple[str, ...] = TENANTS) -> list[bytes]:
    """Every `event` value of the demo, in publishing order; the same for the same seed."""
    rng = random.Random(seed)
    events = []
    for tenant in tenants:
        s = _Stream(rng, tenant)
        _participants(s)
        _orders(s)
        events.extend(s.events)
    # Per aggregate, times increase with seq, so sorting by time keeps every aggregate in order.
    events.sort(key=lambda e: (e[0], e[1], e[4].partition(".")[0], e[2], e[3]))
    lines = []
    for n, (at, tenant, aggregate_id, seq, type_, data) in enumerate(events, 1):
        envelope = {"id": f"evt_{n:07d}", "type": type_, "tenant": tenant}
        envelope |= {"aggregate_id": aggregate_id, "seq": seq, "at": _stamp(at), "data": data}
        lines.append(_encode(envelope))
    lines.extend(lines[i] for i in range(0, len(lines), max(1, len(lines) // 5)))  # redeliveries
    for tenant in tenants:
        lines.extend(poison_entries(tenant))
    return lines
