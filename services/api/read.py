"""The imperative shell of the read API: run a query, cut the page, render its documents.

The four answers below are the API endpoints once the request is authorized (`handlers.respond`):
the tenant is already known, the result is the response body.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from msgspec import Struct

from services.api import queries, schemas
from services.api.cache import DocumentCache
from services.api.etags import etag_of


class OrderNotFound(Exception):
    """No order with this id for this tenant (another tenant's order included)."""


class Page(Struct, frozen=True):
    """A list's page: its rendered orders, the next page's cursor if any, and its weak ETag (of
    the orders as rendered, the limit and the cursor)."""

    docs: list[bytes]
    next_cursor: str | None
    etag: str


_query_key = msgspec.msgpack.Encoder().encode


async def fetch_page(
    pool: asyncpg.Pool, query: queries.ListQuery, secret: bytes, cache: DocumentCache | None = None
) -> Page:
    """One page of a list; from `cache` when it holds it (and is online)."""
    key = _query_key(query) if cache is not None and cache.online else None
    if key is not None:
        page = cache.page(query.tenant, key)  # type: ignore[union-attr]
        if page is not None:
            return page  # type: ignore[return-value]
    start = cache.begin() if cache is not None else None
    try:
        sql, args = queries.list_sql(query)
        rows = await pool.fetch(sql, *args)
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        if query.dialect == "v2":
            docs = [schemas.order_doc(row, 2) for row in rows]
        else:
            docs = [schemas.service_order_doc(row, 2, query.include) for row in rows]
        cursor = None
        if more:
            cursor = queries.next_cursor(query, rows[-1][1], rows[-1][0], secret)
        tag = etag_of([*docs, str(query.limit).encode(), (cursor or "").encode()])
        page = Page(docs, cursor, tag)
        if start is not None and key is not None:
            size = sum(map(sys.getsizeof, docs)) + sys.getsizeof(cursor) + len(docs) * 8
            cache.fill_page(start, query.tenant, key, page, size)  # type: ignore[union-attr]
        return page
    finally:
        if start is not None:
            cache.end(start)  # type: ignore[union-attr]


async def fetch_one(
    pool: asyncpg.Pool, query: queries.GetQuery, cache: DocumentCache | None = None
) -> bytes | None:
    """One rendered order of the tenant, or None; from `cache` when it holds it (and online)."""
    variant = (query.dialect, query.include)
    if cache is not None and cache.online:
        doc = cache.get(query.tenant, query.order_id, variant)
        if doc is not None:
            return doc
    start = cache.begin() if cache is not None else None
    try:
        sql, args = queries.get_sql(query)
        row = await pool.fetchrow(sql, *args)
        if row is None:
            return None
        if query.dialect == "v2":
            doc = schemas.order_doc(row, 0)
        else:
            doc = schemas.service_order_doc(row, 0, query.include)
        if start is not None:
            cache.fill(start, query.tenant, query.order_id, variant, doc, row["participant_id"])  # type: ignore[union-attr]
        return doc
    finally:
        if start is not None:
            cache.end(start)  # type: ignore[union-attr]


class Call(Struct, frozen=True):
    """One authorized request to an endpoint."""

    pool: asyncpg.Pool
    secret: bytes
    tenant: str
    params: queries.Params
    request_id: str
    order_id: str = ""  # the path's {order_id}, for the get endpoints
    cache: DocumentCache | None = None  # None: read PostgreSQL (no cache, or not yet fresh)


class Reply(Struct, frozen=True):
    """An endpoint's 200: the body, and its weak ETag (of everything in it but the request id)."""

    body: bytes
    etag: str


Answer = Callable[[Call], Awaitable[Reply]]


async def service_orders(call: Call) -> Reply:
    """`GET /api/v1/service-orders`."""
    query = queries.service_orders_list(call.tenant, call.params, call.secret)
    page = await fetch_page(call.pool, query, call.secret, call.cache)
    body = schemas.service_orders_page(page.docs, call.request_id, query.limit, page.next_cursor)
    return Reply(body, page.etag)


async def service_order(call: Call) -> Reply:
    """`GET /api/v1/service-orders/{id}`."""
    query = queries.service_order_get(call.tenant, call.order_id, call.params)
    doc = await fetch_one(call.pool, query, call.cache)
    if doc is None:
        raise OrderNotFound
    return Reply(schemas.service_order_one(doc, call.request_id), etag_of([doc]))


async def orders(call: Call) -> Reply:
    """`GET /v1/orders`."""
    query = queries.orders_list(call.tenant, call.params, call.secret)
    page = await fetch_page(call.pool, query, call.secret, call.cache)
    return Reply(schemas.orders_page(page.docs, page.next_cursor), page.etag)


async def order(call: Call) -> Reply:
    """`GET /v1/orders/{id}`."""
    doc = await fetch_one(call.pool, queries.order_get(call.tenant, call.order_id), call.cache)
    if doc is None:
        raise OrderNotFound
    return Reply(schemas.order_one(doc), etag_of([doc]))
