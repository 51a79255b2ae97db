"""The imperative shell of the read API: run a query, cut the page, render its documents."""

from __future__ import annotations

import asyncpg
from msgspec import Struct

from services.api import queries, schemas


class Page(Struct, frozen=True):
    docs: list[bytes]
    next_cursor: str | None


async def fetch_page(pool: asyncpg.Pool, query: queries.ListQuery, secret: bytes) -> Page:
    """One page of a list: its rendered orders and the cursor of the next page, if any."""
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
    return Page(docs, cursor)


async def fetch_one(pool: asyncpg.Pool, query: queries.GetQuery) -> bytes | None:
    """One rendered order of the tenant, or None."""
    sql, args = queries.get_sql(query)
    row = await pool.fetchrow(sql, *args)
    if row is None:
        return None
    if query.dialect == "v2":
        return schemas.order_doc(row, 0)
    return schemas.service_order_doc(row, 0, query.include)
