"""The demo history of `orderview dev`: seeded, contract-valid, and covering both dialects' fields."""

from __future__ import annotations

from collections import defaultdict

import pytest

from projections.events import OrderCreated, ParticipantUpserted, PoisonEvent, decode_event
from services.demo import TENANTS, demo_history


@pytest.fixture(scope="module")
def history() -> list[bytes]:
    return demo_history()


def decoded(history):
    events, poison = [], []
    for line in history:
        try:
            events.append(decode_event(line))
        except PoisonEvent as exc:
            poison.append(str(exc))
    return events, poison


@pytest.mark.smoke
def test_the_same_seed_gives_the_same_history(history):
    assert demo_history() == history
    assert demo_history(seed=1) != history


def test_it_has_a_few_thousand_orders_over_both_tenants(history):
    events, _ = decoded(history)
    orders = {(e.tenant, e.aggregate_id) for e in events if e.type == "order.created"}
    assert {t for t, _ in orders} == set(TENANTS)
    assert 2000 <= len(orders) <= 10_000


def test_seqs_of_every_aggregate_start_at_one_and_arrive_in_order(history):
    events, _ = decoded(history)
    last: dict[tuple, int] = defaultdict(int)
    redelivered = 0
    for e in events:
        if e.seq <= last[e.aggregate]:
            redelivered += 1  # a duplicate: the projector must ignore it
            continue
        assert e.seq == last[e.aggregate] + 1, e
        last[e.aggregate] = e.seq
    assert 0 < redelivered < 10


def test_a_few_entries_are_poison_so_the_dead_letter_stream_is_not_empty(history):
    _, poison = decoded(history)
    assert 2 <= len(poison) <= 20
    assert any("not valid JSON" in p for p in poison)
    assert any("invalid data" in p for p in poison)


def test_every_optional_field_and_every_status_appears(history):
    events, _ = decoded(history)
    created = [e.data for e in events if isinstance(e.data, OrderCreated)]
    for field in ("order_number", "event_key", "participant_id", "location_id", "scheduled_at"):
        assert any(getattr(c, field) is not None for c in created), field
    assert any(c.notes for c in created) and any(c.duration for c in created)
    items = [i for c in created for i in c.items]
    assert any(i.service_id for i in items) and any(i.tax_rate > 0 for i in items)
    types = {e.type for e in events}
    for t in ("submitted", "confirmed", "started", "completed", "cancelled", "item_added"):
        assert f"order.{t}" in types
    assert "order.note_added" in types  # an unknown type: advances seq only
    payments = {e.data.payment_status for e in events if e.type == "order.payment_status_changed"}
    assert payments >= {"paid", "refunded", "failed"}


def test_participants_are_renamed_and_some_orders_come_before_their_participant(history):
    events, _ = decoded(history)
    upserts = [e for e in events if isinstance(e.data, ParticipantUpserted)]
    assert any(e.seq == 2 for e in upserts)
    first_seen = {}
    for e in upserts:
        first_seen.setdefault((e.tenant, e.aggregate_id), e.at)
    early = [
        e
        for e in events
        if isinstance(e.data, OrderCreated)
        and e.data.participant_id
        and e.at < first_seen[(e.tenant, e.data.participant_id)]
    ]
    assert early
