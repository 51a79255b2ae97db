"""The response documents of both API dialects, rendered once at write time.

The projector stores each order's JSON for each dialect in its row, so that the API serves a page by
concatenating bytes. The Structs here are also the API's response schema. Nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import msgspec
from msgspec import Struct

from projections.events import CENT
from projections.fold import (
    LineAmounts,
    OrderState,
    ParticipantState,
    StoredItem,
    line_amounts,
    sum_lines,
)

encoder = msgspec.json.Encoder(decimal_format="number")


# ---- dialect 1: service orders ---------------------------------------------------------------


class ServiceOrderItem(Struct, frozen=True, gc=False):
    id: int
    service_id: str | None
    name: str
    quantity: int
    unit_price: Decimal
    tax_rate: Decimal
    subtotal: Decimal
    tax: Decimal
    total: Decimal


class ServiceOrderParticipant(Struct, frozen=True, gc=False):
    id: int
    name: str | None
    email: str | None


class ServiceOrder(Struct, frozen=True, gc=False):
    """A service order; `items` and `participant` appear only when included."""

    id: int
    order_number: str | None
    event_participant_id: int | None
    status: str
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal
    currency: str
    notes: str | None
    submitted_at: datetime | None
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    cancellation_reason: str | None
    created_at: datetime
    updated_at: datetime
    items: list[ServiceOrderItem] | msgspec.UnsetType = msgspec.UNSET
    participant: ServiceOrderParticipant | None | msgspec.UnsetType = msgspec.UNSET


# ---- dialect 2: orders and bookings ----------------------------------------------------------


class OrderService(Struct, frozen=True, gc=False):
    id: str | None
    name: str
    price: Decimal
    quantity: int


class Order(Struct, frozen=True, gc=False):
    """An order or booking."""

    id: str
    type: str
    status: str
    customerId: str | None  # noqa: N815 (the dialect's field names)
    customerName: str | None  # noqa: N815
    customerEmail: str | None  # noqa: N815
    locationId: str | None  # noqa: N815
    scheduledAt: datetime | None  # noqa: N815
    duration: int | None
    services: list[OrderService]
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    paymentStatus: str  # noqa: N815
    notes: str | None
    createdAt: datetime  # noqa: N815
    updatedAt: datetime  # noqa: N815


# ---- rendering -------------------------------------------------------------------------------


def money(value: Decimal) -> Decimal:
    """Money as served: exactly 2 fractional digits."""
    return value.quantize(CENT)


def rate(value: Decimal) -> Decimal:
    """A rate as served: no trailing zeros, never an exponent."""
    if value.is_signed():  # -0 equals 0 but is served as -0: keep it out of the cache
        return Decimal(format(value.normalize(), "f"))
    served = _served_rates.get(value)
    if served is None:
        if len(_served_rates) >= 1024:  # a handful of rates in practice; stay bounded anyway
            _served_rates.clear()
        served = _served_rates[value] = Decimal(format(value.normalize(), "f"))
    return served


# Equal rates (0.19, 0.190) serve the same text, so any of them may stand for the others.
_served_rates: dict[Decimal, Decimal] = {}


class RenderedOrder(Struct, frozen=True, gc=False):
    """One order's amounts as stored and its documents: dialect 1 object and items, dialect 2."""

    subtotal: Decimal
    tax_total: Decimal
    total: Decimal
    doc_v1: bytes
    items_v1: bytes
    doc_v2: bytes


def render_order(state: OrderState) -> RenderedOrder:
    """Render both dialects' documents (participant fields are spliced in at read time)."""
    lines = [line_amounts(i) for i in state.items]
    amounts = sum_lines(lines)
    subtotal, tax_total, total = money(amounts.subtotal), money(amounts.tax), money(amounts.total)
    items = [_service_item(i, line) for i, line in zip(state.items, lines, strict=True)]
    v1 = ServiceOrder(
        id=state.id,
        order_number=state.order_number,
        event_participant_id=state.participant_id,
        status=state.status,
        subtotal=subtotal,
        tax_total=tax_total,
        total=total,
        currency=state.currency,
        notes=state.notes,
        submitted_at=state.submitted_at,
        confirmed_at=state.confirmed_at,
        cancelled_at=state.cancelled_at,
        cancellation_reason=state.cancellation_reason,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )
    v2 = _order_v2(state, items, subtotal, tax_total, total)
    docs = (encoder.encode(v1), encoder.encode(items), _without_customer(v2))
    return RenderedOrder(subtotal, tax_total, total, *docs)


def _service_item(item: StoredItem, line: LineAmounts) -> ServiceOrderItem:
    return ServiceOrderItem(
        id=item.id,
        service_id=item.service_id,
        name=item.name,
        quantity=item.quantity,
        unit_price=money(item.unit_price),
        tax_rate=rate(item.tax_rate),
        subtotal=money(line.subtotal),
        tax=money(line.tax),
        total=money(line.total),
    )


def _order_v2(
    state: OrderState,
    items: list[ServiceOrderItem],
    subtotal: Decimal,
    tax: Decimal,
    total: Decimal,
) -> Order:
    return Order(
        id=f"ord_{state.id}",
        type=state.type,
        status=state.status,
        customerId=None if state.participant_id is None else f"cust_{state.participant_id}",
        customerName=None,
        customerEmail=None,
        locationId=state.location_id,
        scheduledAt=state.scheduled_at,
        duration=state.duration,
        services=[OrderService(i.service_id, i.name, i.unit_price, i.quantity) for i in items],
        subtotal=subtotal,
        tax=tax,
        total=total,
        paymentStatus=state.payment_status,
        notes=state.notes,
        createdAt=state.created_at,
        updatedAt=state.updated_at,
    )


_NO_CUSTOMER = b'"customerName":null,"customerEmail":null'


def _without_customer(order: Order) -> bytes:
    doc = encoder.encode(order)
    return doc.replace(_NO_CUSTOMER + b",", b"", 1)


class RenderedParticipant(Struct, frozen=True, gc=False):
    """A participant's fragments, copied into every order that names it."""

    participant_v1: bytes
    customer_v2: bytes


def render_participant(state: ParticipantState) -> RenderedParticipant:
    """Dialect 1 `participant` object and dialect 2 customerName/customerEmail members.
    A participant with only events of unknown types was never upserted: shown as unknown."""
    if state.name is None:
        return RenderedParticipant(PARTICIPANT_V1_UNKNOWN, CUSTOMER_V2_UNKNOWN)
    v1 = encoder.encode(ServiceOrderParticipant(state.id, state.name, state.email))
    v2 = encoder.encode({"customerName": state.name, "customerEmail": state.email})[1:-1]
    return RenderedParticipant(v1, v2)


PARTICIPANT_V1_UNKNOWN = b"null"
CUSTOMER_V2_UNKNOWN = _NO_CUSTOMER


def splice(doc: bytes, *members: bytes) -> bytes:
    """Add pre-rendered `"name":value` members to a rendered JSON object."""
    if not members:
        return doc
    return b"".join((doc[:-1], b",", b",".join(members), b"}"))
