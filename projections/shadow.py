"""The rebuild's schema: made from the read model's migrations, indexed at the end, swapped in."""

from __future__ import annotations

import asyncio

import asyncpg

from projections.migrate import read_model_sql
from projections.tables import NEXT_SCHEMA, OLD_SCHEMA, READ_SCHEMA

_SECONDARY_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND NOT i.indisprimary
ORDER BY c.relname
"""


async def clean_up(conn: asyncpg.Connection) -> None:
    """Drop what a killed rebuild left: its schema, and the old read model if it had swapped."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {NEXT_SCHEMA} CASCADE")
    await conn.execute(f"DROP SCHEMA IF EXISTS {OLD_SCHEMA} CASCADE")


async def create(conn: asyncpg.Connection) -> list[str]:
    """Make the rebuild's schema from the read model's migrations, without its secondary indexes
    (built once at the end, see build_indexes); return their definitions."""
    async with conn.transaction():
        for sql in read_model_sql(NEXT_SCHEMA):
            await conn.execute(sql)
        indexes = await conn.fetch(_SECONDARY_INDEXES, NEXT_SCHEMA)
        for name, _ in indexes:
            await conn.execute(f"DROP INDEX {NEXT_SCHEMA}.{name}")
    return [definition for _, definition in indexes]


# The columns ANALYZE reads: all but the rendered documents (bytea), which no query filters or
# sorts by, and whose sampled values PostgreSQL would detoast, for most of ANALYZE's time.
_ANALYZED = """
SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped
  AND atttypid <> 'bytea'::regtype
"""


async def build_indexes(conns: list[asyncpg.Connection], definitions: list[str]) -> None:
    """Build the secondary indexes, one at a time on each connection (PostgreSQL may also use
    parallel workers for each), then ANALYZE (autovacuum's next one covers the documents)."""
    queue = list(definitions)

    async def worker(conn: asyncpg.Connection) -> None:
        await conn.execute("SET maintenance_work_mem = '128MB'")
        while queue:
            await conn.execute(queue.pop(0))
        await conn.execute("RESET maintenance_work_mem")

    await asyncio.gather(*(worker(conn) for conn in conns))
    tables = []
    for table in (f"{NEXT_SCHEMA}.orders", f"{NEXT_SCHEMA}.participants"):
        tables.append(f"{table} ({await conns[0].fetchval(_ANALYZED, table)})")
    await conns[0].execute("ANALYZE " + ", ".join(tables))


async def rename(conn: asyncpg.Connection) -> None:
    """Swap the rebuild's schema in, in the caller's transaction: `read_model` becomes the old
    one, the rebuild's becomes `read_model`. Statements prepared on the old tables (the API's)
    are planned again on their next run: a schema's rename invalidates every cached plan."""
    await conn.execute(f"ALTER SCHEMA {READ_SCHEMA} RENAME TO {OLD_SCHEMA}")
    await conn.execute(f"ALTER SCHEMA {NEXT_SCHEMA} RENAME TO {READ_SCHEMA}")


async def drop_old(conn: asyncpg.Connection) -> None:
    """Drop the old read model (waits for the reads still running on it)."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {OLD_SCHEMA} CASCADE")
