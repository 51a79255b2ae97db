"""Response bodies of both dialects: the Structs that document them and the bytes that serve them.

A page is the rows' pre-rendered documents joined by commas inside an envelope encoded by msgspec;
no row is decoded. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from msgspec import Struct

from projections.documents import Order, ServiceOrder, splice

_encoder = msgspec.json.Encoder()

# ---- dialect 1 -----------------------------------------------------------------------------------


class Pagination(Struct, frozen=True):
    limit: int
    has_more: bool
    next_cursor: str | None


class ListMeta(Struct, frozen=True):
    request_id: str
    pagination: Pagination


class Meta(Struct, frozen=True):
    request_id: str


class ServiceOrderList(Struct, frozen=True):
    """A page of service orders."""

    data: list[ServiceOrder]
    meta: ListMeta


class ServiceOrderOne(Struct, frozen=True):
    """One service order."""

    data: ServiceOrder
    meta: Meta


class ErrorDetail(Struct, frozen=True):
    code: str
    message: str
    parameter: str | None


class ServiceOrderError(Struct, frozen=True):
    """An error of the service-orders dialect."""

    error: ErrorDetail
    meta: Meta


# ---- dialect 2 -----------------------------------------------------------------------------------


class OrderPagination(Struct, frozen=True):
    hasMore: bool  # noqa: N815 (the dialect's field names)
    nextCursor: str | None  # noqa: N815


class OrderList(Struct, frozen=True):
    """A page of orders and bookings."""

    success: bool
    data: list[Order]
    pagination: OrderPagination


class OrderOne(Struct, frozen=True):
    """One order or booking."""

    success: bool
    data: Order


class OrderErrorDetail(Struct, frozen=True):
    code: str
    message: str


class OrderError(Struct, frozen=True):
    """An error of the orders dialect."""

    success: bool
    error: OrderErrorDetail


# ---- rendering -----------------------------------------------------------------------------------


def service_order_doc(row: Sequence[bytes], at: int, include: Sequence[str]) -> bytes:
    """A dialect 1 order from its columns from `at` on: doc_v1, then each included fragment."""
    if not include:
        return row[at]
    members = (b'"%s":%s' % (name.encode(), row[at + i]) for i, name in enumerate(include, 1))
    return splice(row[at], *members)


def order_doc(row: Sequence[bytes], at: int) -> bytes:
    """A dialect 2 order from its columns from `at` on: doc_v2 and customer_v2."""
    return splice(row[at], row[at + 1])


def service_orders_page(
    docs: list[bytes], request_id: str, limit: int, next_cursor: str | None
) -> bytes:
    """`{"data": [...], "meta": {"request_id", "pagination"}}`."""
    meta = ListMeta(request_id, Pagination(limit, next_cursor is not None, next_cursor))
    return b'{"data":[%s],"meta":%s}' % (b",".join(docs), _encoder.encode(meta))


def service_order_one(doc: bytes, request_id: str) -> bytes:
    """`{"data": {...}, "meta": {"request_id"}}`."""
    return b'{"data":%s,"meta":%s}' % (doc, _encoder.encode(Meta(request_id)))


def orders_page(docs: list[bytes], next_cursor: str | None) -> bytes:
    """`{"success": true, "data": [...], "pagination": {"hasMore", "nextCursor"}}`."""
    pagination = _encoder.encode(OrderPagination(next_cursor is not None, next_cursor))
    return b'{"success":true,"data":[%s],"pagination":%s}' % (b",".join(docs), pagination)


def order_one(doc: bytes) -> bytes:
    """`{"success": true, "data": {...}}`."""
    return b'{"success":true,"data":%s}' % doc


def error_body(
    dialect: str, code: str, message: str, parameter: str | None, request_id: str
) -> bytes:
    """The error document of a dialect."""
    if dialect == "v2":
        return _encoder.encode(OrderError(False, OrderErrorDetail(code, message)))
    return _encoder.encode(
        ServiceOrderError(ErrorDetail(code, message, parameter), Meta(request_id))
    )
