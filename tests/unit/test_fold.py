"""The pure fold: each event's effect, the rounding rule, and order-independence properties."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.events import Item, decode_event
from projections.fold import line_amounts, order_amounts, plan_batch
from services.histories import varied, with_faults
from tests.model import expected_state

WORKED_EXAMPLE = [
    '{"id":"e1","type":"participant.upserted","tenant":"acme","aggregate_id":7,"seq":1,"at":"2024-01-19T09:00:00Z","data":{"name":"John Doe","email":"john@example.com"}}',
    '{"id":"e2","type":"order.created","tenant":"acme","aggregate_id":42,"seq":1,"at":"2024-01-20T14:30:00Z","data":{"type":"booking","currency":"USD","participant_id":7,"location_id":"loc_def456","scheduled_at":"2024-01-25T10:00:00Z","duration":60,"notes":"First-time customer","items":[{"id":1,"service_id":"svc_123","name":"Consultation","quantity":1,"unit_price":"75.00","tax_rate":"0.0875"}]}}',
    '{"id":"e3","type":"order.submitted","tenant":"acme","aggregate_id":42,"seq":2,"at":"2024-01-20T14:35:00Z","data":{"order_number":"SO-0042"}}',
    '{"id":"e4","type":"order.confirmed","tenant":"acme","aggregate_id":42,"seq":3,"at":"2024-01-20T15:00:00Z","data":{}}',
    '{"id":"e5","type":"order.payment_status_changed","tenant":"acme","aggregate_id":42,"seq":4,"at":"2024-01-20T15:00:00Z","data":{"payment_status":"paid"}}',
]  # fmt: skip


def events_of(lines: list[str]) -> list:
    return [(i, decode_event(line.encode())) for i, line in enumerate(lines)]


def fold_in_batches(events: list, batch_size: int):
    """Drive plan_batch the way the projector does: stored states, held gaps retried."""
    orders, participants, held = {}, {}, []
    for start in range(0, len(events) + batch_size, batch_size):
        batch = held + events[start : start + batch_size]
        if not batch:
            break
        plan = plan_batch(batch, orders, participants)
        orders.update(plan.orders)
        participants.update(plan.participants)
        held_keys = set(plan.held)
        held = [pair for pair in batch if pair[0] in held_keys]
    return orders, participants, held


def test_the_worked_example_of_events_md():
    plan = plan_batch(events_of(WORKED_EXAMPLE), {}, {})
    order = plan.orders[("acme", 42)]
    assert (order.status, order.payment_status, order.order_number) == (
        "confirmed",
        "paid",
        "SO-0042",
    )
    amounts = order_amounts(order.items)
    assert (amounts.subtotal, amounts.tax, amounts.total) == (
        Decimal("75.00"),
        Decimal("6.56"),
        Decimal("81.56"),
    )
    assert plan.participants[("acme", 7)].name == "John Doe"


@pytest.mark.parametrize(
    ("price", "quantity", "rate", "tax"),
    [
        pytest.param("75.00", 1, "0.0875", "6.56", id="worked-example"),
        pytest.param("0.10", 1, "0.05", "0.01", id="half-cent-rounds-up"),
        pytest.param("0.30", 1, "0.05", "0.02", id="one-and-a-half-cents-rounds-up"),
        pytest.param("0.01", 1, "0.5", "0.01", id="exact-half-away-from-zero"),
        pytest.param("0.01", 1, "0.4", "0.00", id="below-half-rounds-down"),
        pytest.param("19.99", 4, "0.055", "4.40", id="line-subtotal-is-exact-before-tax"),
        pytest.param("1234.56", 5, "0", "0.00", id="no-rate"),
        pytest.param("9999999999.99", 3, "1", "29999999999.97", id="largest-price"),
    ],
)
def test_line_tax_is_rounded_to_cents_with_halves_away_from_zero(price, quantity, rate, tax):
    line = line_amounts(Item(1, "x", quantity, Decimal(price), Decimal(rate)))
    assert line.subtotal == Decimal(price) * quantity
    assert line.tax == Decimal(tax)
    assert line.total == line.subtotal + line.tax


def test_order_tax_is_the_sum_of_rounded_line_taxes_not_the_rounded_sum():
    items = (
        Item(1, "a", 1, Decimal("0.10"), Decimal("0.05")),
        Item(2, "b", 1, Decimal("0.10"), Decimal("0.05")),
    )
    assert order_amounts(items).tax == Decimal("0.02")  # 0.005 + 0.005 would round to 0.01


def test_a_duplicate_changes_nothing_and_is_reported():
    events = events_of(WORKED_EXAMPLE + WORKED_EXAMPLE[2:3])
    plan = plan_batch(events, {}, {})
    assert plan.duplicates == [5]
    assert plan.orders[("acme", 42)].seq == 4


def test_an_event_after_a_missing_seq_is_held_and_applies_once_the_gap_fills():
    events = events_of(WORKED_EXAMPLE)
    first = plan_batch([events[0], events[1], events[3]], {}, {})
    assert first.held == [3]
    assert first.orders[("acme", 42)].status == "draft"
    second = plan_batch([events[2], events[3]], first.orders, first.participants)
    assert second.held == [] and second.orders[("acme", 42)].status == "confirmed"


def test_an_order_event_before_its_order_exists_is_a_gap():
    plan = plan_batch(events_of(WORKED_EXAMPLE[2:3]), {}, {})
    assert plan.held == [0] and not plan.orders


def test_an_unknown_type_advances_seq_and_updated_at_only():
    unknown = json.loads(WORKED_EXAMPLE[2])
    unknown.update(type="order.flagged_for_review", data={"by": "x"}, at="2024-02-01T00:00:00Z")
    plan = plan_batch(events_of([WORKED_EXAMPLE[1], json.dumps(unknown)]), {}, {})
    order = plan.orders[("acme", 42)]
    assert (order.seq, order.status, order.updated_at.isoformat()) == (
        2,
        "draft",
        "2024-02-01T00:00:00+00:00",
    )
    assert plan.unknown_types == 1


def test_status_transitions_are_applied_as_they_come():
    cancelled = '{"id":"c","type":"order.cancelled","tenant":"acme","aggregate_id":42,"seq":2,"at":"2024-01-21T00:00:00Z","data":{}}'
    confirmed = '{"id":"d","type":"order.confirmed","tenant":"acme","aggregate_id":42,"seq":3,"at":"2024-01-22T00:00:00Z","data":{}}'
    order = plan_batch(events_of([WORKED_EXAMPLE[1], cancelled, confirmed]), {}, {}).orders[
        ("acme", 42)
    ]
    assert (order.status, order.cancellation_reason) == ("confirmed", None)
    assert order.cancelled_at is not None and order.confirmed_at is not None


def test_timestamps_with_offsets_are_stored_in_utc():
    line = WORKED_EXAMPLE[1].replace("2024-01-20T14:30:00Z", "2024-01-20T16:30:00+02:00")
    order = plan_batch(events_of([line]), {}, {}).orders[("acme", 42)]
    assert order.created_at.isoformat() == "2024-01-20T14:30:00+00:00"


def _comparable(orders: dict) -> dict:
    return {
        k: (
            s.seq,
            s.status,
            s.payment_status,
            s.order_number,
            s.participant_id,
            s.items,
            s.updated_at,
        )
        for k, s in orders.items()
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    fault_seed=st.integers(0, 10_000),
    batch_size=st.integers(1, 60),
    duplicates=st.floats(0, 0.5),
    swaps=st.floats(0, 0.3),
)
def test_duplicates_and_per_aggregate_reorderings_give_the_clean_state(
    seed, fault_seed, batch_size, duplicates, swaps
):
    clean = varied(seed, orders=8)
    noisy = with_faults(clean, fault_seed, duplicates=duplicates, swaps=swaps)
    clean_orders, clean_parts, clean_held = fold_in_batches(
        events_of([json.dumps(e) for e in clean.events]), 10_000
    )
    orders, parts, held = fold_in_batches(
        events_of([json.dumps(e) for e in noisy.events]), batch_size
    )
    assert clean_held == [] and held == []
    assert _comparable(orders) == _comparable(clean_orders)
    assert parts == clean_parts


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), interleave_seed=st.integers(0, 10_000))
def test_any_interleaving_that_keeps_each_aggregates_order_gives_the_same_state(
    seed, interleave_seed
):
    events = varied(seed, orders=6).events
    rng = random.Random(interleave_seed)
    by_aggregate: dict = {}
    for e in events:
        by_aggregate.setdefault(
            (e["tenant"], e["type"].split(".")[0], e["aggregate_id"]), []
        ).append(e)
    queues = list(by_aggregate.values())
    shuffled = []
    while queues:
        q = rng.choice(queues)
        shuffled.append(q.pop(0))
        if not q:
            queues.remove(q)
    a = fold_in_batches(events_of([json.dumps(e) for e in events]), 7)
    b = fold_in_batches(events_of([json.dumps(e) for e in shuffled]), 5)
    assert _comparable(a[0]) == _comparable(b[0]) and a[1] == b[1]


def test_the_fold_agrees_with_the_independent_model():
    history = varied(7, orders=40)
    orders, _, _ = fold_in_batches(events_of([json.dumps(e) for e in history.events]), 25)
    model_orders, _ = expected_state(history.events)
    assert set(orders) == set(model_orders)
    for key, state in orders.items():
        expected = model_orders[key]
        amounts = order_amounts(state.items)
        assert (state.status, state.payment_status, amounts.total, state.seq) == (
            expected["status"],
            expected["payment_status"],
            expected["total"],
            expected["seq"],
        ), key
