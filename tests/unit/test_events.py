"""Validation of stream entries: every rule of events.md, poison cases with readable reasons."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from projections.events import (
    ItemUpdated,
    OrderCreated,
    PoisonEvent,
    UnknownType,
    _decode_strictly,
    decode_event,
    stream_for,
)


def envelope(**overrides) -> dict:
    base = {
        "id": "e1",
        "type": "order.created",
        "tenant": "acme",
        "aggregate_id": 42,
        "seq": 1,
        "at": "2024-01-20T14:30:00Z",
        "data": {"type": "booking", "currency": "USD"},
    }
    base.update(overrides)
    return base


def item(**overrides) -> dict:
    base = {"id": 1, "name": "Consultation", "quantity": 1, "unit_price": "75.00"}
    base.update(overrides)
    return base


def raw(value) -> bytes:
    return json.dumps(value).encode()


def test_a_valid_order_created_decodes_into_typed_payload():
    event = decode_event(raw(envelope(data={"type": "sale", "currency": "EUR", "items": [item()]})))
    assert isinstance(event.data, OrderCreated)
    assert event.data.items[0].unit_price == Decimal("75.00")
    assert event.kind == "order" and event.aggregate == ("acme", "order", 42)


@pytest.mark.parametrize("price", ["75.00", 75, 12.5, "0", "9999999999.99", "1E+2"], ids=str)
def test_money_accepts_strings_and_numbers_with_at_most_two_decimals(price):
    event = decode_event(
        raw(envelope(data={"type": "sale", "currency": "EUR", "items": [item(unit_price=price)]}))
    )
    assert event.data.items[0].unit_price == Decimal(str(price))


def test_money_as_a_json_number_keeps_its_exact_decimal_value():
    event = decode_event(b'{"id":"e","type":"order.item_added","tenant":"t","aggregate_id":1,"seq":2,'
                         b'"at":"2024-01-01T00:00:00Z","data":{"item":{"id":1,"name":"x","quantity":3,'
                         b'"unit_price":19.99,"tax_rate":0.0875}}}')  # fmt: skip
    assert event.data.item.unit_price == Decimal("19.99")
    assert event.data.item.tax_rate == Decimal("0.0875")


def test_an_unknown_order_type_is_well_formed_and_carries_no_payload():
    event = decode_event(raw(envelope(type="order.flagged_for_review", data={"by": "x"})))
    assert isinstance(event.data, UnknownType)


def test_details_changed_tells_absent_fields_from_null_ones():
    event = decode_event(
        raw(envelope(type="order.item_updated", seq=2, data={"item_id": 1, "service_id": None}))
    )
    assert isinstance(event.data, ItemUpdated)
    assert event.data.service_id is None
    assert event.data.name.__class__.__name__ == "UnsetType"


POISON = [
    pytest.param(b"not json at all", "not valid JSON", id="not-json"),
    pytest.param(b"[1, 2, 3]", "Expected `object`", id="array"),
    pytest.param(b"\xff\xfe", "not valid JSON", id="not-utf8"),
    pytest.param(None, "no `event` field", id="no-event-field"),
    pytest.param(raw(envelope(id="e\udcff")).replace(b"\\udcff", b"\xff"), "UTF-8", id="bad-utf8-in-envelope"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "notes": "\udcff"})).replace(b"\\udcff", b"\xff"), "UTF-8", id="bad-utf8-in-data"),
    pytest.param(raw(envelope(at="0001-01-01T00:00:00+01:00")), "`at` is out of range", id="at-before-utc-range"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "scheduled_at": "9999-12-31T23:59:59-01:00"})), "scheduled_at", id="scheduled-after-utc-range"),
    pytest.param(raw(envelope(tenant="acme\n")), "$.tenant", id="tenant-trailing-newline"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD\n"})), "$.data.currency", id="currency-trailing-newline"),
    pytest.param(raw(envelope(id="")), "$.id", id="empty-id"),
    pytest.param(raw(envelope(id="x" * 129)), "$.id", id="id-too-long"),
    pytest.param(raw(envelope(type="invoice.created", data={})), "$.type", id="foreign-type"),
    pytest.param(raw(envelope(type="order")), "$.type", id="type-without-name"),
    pytest.param(raw(envelope(tenant="Acme")), "$.tenant", id="tenant-upper-case"),
    pytest.param(raw(envelope(tenant="a" * 65)), "$.tenant", id="tenant-too-long"),
    pytest.param(raw(envelope(tenant="")), "$.tenant", id="tenant-empty"),
    pytest.param(raw(envelope(aggregate_id=0)), "$.aggregate_id", id="aggregate-zero"),
    pytest.param(raw(envelope(aggregate_id=2**63)), "$.aggregate_id", id="aggregate-too-big"),
    pytest.param(raw(envelope(aggregate_id="42")), "$.aggregate_id", id="aggregate-string"),
    pytest.param(raw(envelope(seq=0)), "$.seq", id="seq-zero"),
    pytest.param(raw(envelope(seq=1.5)), "$.seq", id="seq-float"),
    pytest.param(raw(envelope(at="2024-01-20 14:30")), "$.at", id="at-not-rfc3339"),
    pytest.param(raw(envelope(at="2024-01-20T14:30:00")), "$.at", id="at-without-offset"),
    pytest.param(raw(envelope(data=[])), "$.data", id="data-array"),
    pytest.param(raw({k: v for k, v in envelope().items() if k != "data"}), "data", id="data-missing"),
    pytest.param(raw(envelope(type="order.custom", data=None)), "order.custom", id="unknown-type-data-null"),
    pytest.param(raw(envelope(data={"currency": "USD"})), "$.data", id="created-without-type"),
    pytest.param(raw(envelope(data={"type": "rental", "currency": "USD"})), "$.data.type", id="created-bad-type"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "usd"})), "$.data.currency", id="currency-lower"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "participant_id": "7"})), "participant_id", id="participant-id-string"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "duration": -1})), "duration", id="duration-negative"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "scheduled_at": "tomorrow"})), "scheduled_at", id="scheduled-bad"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "notes": "n" * 10_001})), "notes", id="notes-too-long"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "order_number": "n" * 1001})), "order_number", id="string-too-long"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "order_number": "a\x00b"})), "order_number", id="string-with-nul"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(unit_price="1.001")]})), "2 fractional digits", id="price-three-decimals"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(unit_price="-1")]})), "unit_price", id="price-negative"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(unit_price="10000000000")]})), "unit_price", id="price-too-big"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(unit_price="NaN")]})), "unit_price", id="price-nan"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(unit_price="abc")]})), "unit_price", id="price-not-decimal"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(tax_rate="1.5")]})), "tax_rate", id="rate-above-one"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(tax_rate="0.1234567")]})), "6 fractional digits", id="rate-seven-decimals"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(quantity=0)]})), "quantity", id="quantity-zero"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(id=0)]})), "id", id="item-id-zero"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [item(), item()]})), "same id", id="items-same-id"),
    pytest.param(raw(envelope(data={"type": "sale", "currency": "USD", "items": [{"id": 1}]})), "name", id="item-incomplete"),
    pytest.param(raw(envelope(type="order.item_added", data={})), "item", id="item-added-without-item"),
    pytest.param(raw(envelope(type="order.item_updated", data={"item_id": 1, "quantity": 0})), "quantity", id="item-updated-bad-quantity"),
    pytest.param(raw(envelope(type="order.item_updated", data={"item_id": 1, "unit_price": None})), "unit_price", id="item-updated-null-price"),
    pytest.param(raw(envelope(type="order.item_removed", data={})), "item_id", id="item-removed-without-id"),
    pytest.param(raw(envelope(type="order.details_changed", data={"duration": "60"})), "duration", id="details-bad-duration"),
    pytest.param(raw(envelope(type="order.payment_status_changed", data={"payment_status": "lost"})), "payment_status", id="payment-status-unknown"),
    pytest.param(raw(envelope(type="order.cancelled", data={"reason": 5})), "reason", id="reason-not-string"),
    pytest.param(raw(envelope(type="participant.upserted", data={"email": "a@b"})), "name", id="participant-without-name"),
    pytest.param(raw(envelope(type="participant.upserted", data={"name": "x", "email": 5})), "email", id="participant-bad-email"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "reason"), POISON)
def test_poison_entries_are_rejected_with_a_reason_naming_the_problem(value, reason):
    with pytest.raises(PoisonEvent) as caught:
        decode_event(value)
    assert reason in str(caught.value)


def test_sharding_follows_crc32_of_tenant_kind_and_id():
    import zlib

    streams = tuple(f"orders:events:{i}" for i in range(4))
    expected = streams[zlib.crc32(b"acme:order:42") % 4]
    assert stream_for(streams, "acme", "order", 42) == expected
    assert stream_for(("only",), "acme", "participant", 7) == "only"


def _created(**data) -> dict:
    return envelope(data={"type": "sale", "currency": "USD", **data})


# Entries that the fast way (types as declared, NUL looked for in the raw entry) and the strict
# way (every string checked) could tell apart if the fast way were wrong.
TWO_WAYS = [
    pytest.param(raw(_created(notes="a\x00b")), id="nul-in-a-text-field"),
    pytest.param(raw(_created(items=[item(name="\x00")])), id="nul-in-a-nested-text-field"),
    pytest.param(raw(_created(ignored="a\x00b")), id="nul-in-an-ignored-field"),
    pytest.param(raw(_created(notes="a\\u0000b")), id="escaped-backslash-before-u0000"),
    pytest.param(raw(_created(notes="a\x00b", currency="usd")), id="nul-before-a-later-error"),
    pytest.param(raw(_created(type="sale\n")), id="order-type-with-newline"),
    pytest.param(raw(envelope(tenant="Acme")), id="tenant-upper-case"),
    pytest.param(raw(envelope(tenant="acme\n")), id="tenant-with-newline"),
    pytest.param(raw(envelope(tenant="a" * 65)), id="tenant-too-long"),
    pytest.param(raw(envelope(type="order.noted", data={"x": "\x00"})), id="unknown-type-with-nul"),
    pytest.param(raw(envelope(type="orders.created")), id="type-outside-the-vocabulary"),
    pytest.param(raw(envelope(type="order.payment_status_changed", data={"payment_status": "paid\n"})), id="payment-status-with-newline"),
    pytest.param(json.dumps(envelope(), ensure_ascii=False), id="a-str-not-bytes"),
    pytest.param(raw(_created(notes="é\x00")).replace(b"\\u00e9", "é".encode()), id="utf8-and-nul"),
]  # fmt: skip


@pytest.mark.parametrize("value", TWO_WAYS)
def test_every_entry_is_decided_as_the_strict_types_decide_it(value):
    """decode_event's fast way gives the same event, or the same reason, as the strict way."""

    def outcome(decode):
        try:
            return decode(value)
        except PoisonEvent as exc:
            return str(exc)

    assert outcome(decode_event) == outcome(_decode_strictly)
