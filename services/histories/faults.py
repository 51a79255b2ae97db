"""Faults on demand: redelivered duplicates, same-aggregate reordering (gaps that fill) and poison."""

from __future__ import annotations

import random

import msgspec

from services.histories.interleaved import History

POISON_LINES = [
    "not json at all",
    "[1, 2, 3]",
    '{"id": "p1", "type": "invoice.created", "tenant": "acme", "aggregate_id": 1, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {}}',
    '{"id": "p2", "type": "order.created", "tenant": "ACME", "aggregate_id": 1, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {"type": "sale", "currency": "USD"}}',
    '{"id": "p3", "type": "order.created", "tenant": "acme", "aggregate_id": 0, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {"type": "sale", "currency": "USD"}}',
    '{"id": "p4", "type": "order.created", "tenant": "acme", "aggregate_id": 9, "seq": 1, "at": "yesterday", "data": {"type": "sale", "currency": "USD"}}',
    '{"id": "p5", "type": "order.created", "tenant": "acme", "aggregate_id": 9, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {"type": "sale", "currency": "usd"}}',
    '{"id": "p6", "type": "order.created", "tenant": "acme", "aggregate_id": 9, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {"type": "sale", "currency": "USD", "items": [{"id": 1, "name": "x", "quantity": 1, "unit_price": "1.001"}]}}',
    '{"id": "p7", "type": "order.created", "tenant": "acme", "aggregate_id": 9, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {"type": "sale", "currency": "USD", "items": [{"id": 1, "name": "x", "quantity": 0, "unit_price": "1"}]}}',
    '{"id": "p8", "type": "participant.upserted", "tenant": "acme", "aggregate_id": 9, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": {}}',
    '{"id": "p9", "type": "order.item_added", "tenant": "acme", "aggregate_id": 9, "seq": 2, "at": "2024-01-01T00:00:00Z", "data": {"item": {"id": 1, "name": "x", "quantity": 1, "unit_price": "1", "tax_rate": "2"}}}',
    '{"type": "order.created"}',
]  # fmt: skip


def with_faults(
    history: History, seed: int, *, duplicates: float = 0.1, swaps: float = 0.05, poison: int = 0
) -> History:
    """The same history with redelivered duplicates, adjacent same-aggregate swaps (gaps that
    fill) and poison lines; the independent model of the result equals that of the original."""
    rng = random.Random(seed)
    events = list(history.events)
    for i in range(len(events) - 1, 0, -1):
        if rng.random() < swaps:
            a = _key(events[i])
            j = next((j for j in range(i - 1, max(i - 20, -1), -1) if _key(events[j]) == a), None)
            if j is not None:
                events[i], events[j] = events[j], events[i]
    for event in list(events):
        if rng.random() < duplicates:
            events.insert(rng.randrange(len(events) + 1), event)
    lines = [POISON_LINES[i % len(POISON_LINES)] for i in range(poison)]
    return History(events, history.poison + lines)


def _key(event: dict) -> tuple:
    return (event["tenant"], event["type"].split(".")[0], event["aggregate_id"])


def redeliver(lines: list[bytes], count: int) -> list[bytes]:
    """The lines followed by `count` of them again, spread evenly: redeliveries the projector must
    recognise as duplicates."""
    return lines + [lines[i] for i in range(0, len(lines), max(1, len(lines) // count))]


def poison_entries(tenant: str) -> list[bytes]:
    """Entries the projector must dead-letter, for a history of realistic tenants: each on an
    aggregate no valid event touches (ids from 9,000,001), so nothing waits behind it."""
    base = {"tenant": tenant, "seq": 1, "at": "2024-01-01T00:00:00Z"}
    bad_price = {"id": 1, "name": "Fractional cent", "quantity": 1, "unit_price": "1.001"}
    return [
        b"{this is not json",
        _encode({"hello": "an object that is not an envelope"}),
        _encode({**base, "id": "poison-1", "type": "invoice.created", "aggregate_id": 9_000_001}),
        _encode(
            {**base, "id": "poison-2", "type": "order.created", "aggregate_id": 9_000_002}
            | {"data": {"type": "booking", "currency": "euro"}}
        ),
        _encode(
            {**base, "id": "poison-3", "type": "order.created", "aggregate_id": 9_000_003}
            | {"data": {"type": "sale", "currency": "EUR", "items": [bad_price]}}
        ),
    ]


_encode = msgspec.json.Encoder().encode
