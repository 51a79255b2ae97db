"""The dead-letter ledger (`orderview.dead_letters`) as the projector writes it: who may publish a
dead letter, and which ones are in `<stream>:dlq` already.

A dead letter is recorded in the batch's transaction, leased to the consumer that is to publish
it; the lease is taken over by another consumer once stale, so a consumer that died before
publishing never leaves one unpublished, and one that did publish never publishes it twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
import msgspec

from projections.entries import as_text
from projections.tables import DEAD_LETTERS

# Take the right to publish dead letters: new rows, our own (a retry), or stale leases.
_LEASE_DEAD_LETTERS = f"""
INSERT INTO {DEAD_LETTERS} AS d (stream, entry_id, error, lease_owner, event)
SELECT $1, u.entry_id, u.error, $2, u.event
FROM unnest($3::text[], $4::text[], $6::bytea[]) AS u (entry_id, error, event)
ON CONFLICT (stream, entry_id) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, lease_at = now()
WHERE d.published_at IS NULL
  AND (d.lease_owner = EXCLUDED.lease_owner OR d.lease_at < now() - make_interval(secs => $5))
RETURNING entry_id
"""
_PUBLISHED = f"""
SELECT entry_id FROM {DEAD_LETTERS}
WHERE stream = $1 AND entry_id = ANY($2::text[]) AND published_at IS NOT NULL
"""
_DEAD_LETTERED = f"""
SELECT stream, entry_id FROM {DEAD_LETTERS}
WHERE (stream, entry_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
_ANY_DEAD_LETTER = f"SELECT EXISTS (SELECT FROM {DEAD_LETTERS} WHERE stream = ANY($1::text[]))"
_MARK_PUBLISHED = f"""
UPDATE {DEAD_LETTERS} d SET published_at = now(), dlq_id = u.dlq_id
FROM unnest($2::text[], $3::text[]) AS u (entry_id, dlq_id)
WHERE d.stream = $1 AND d.entry_id = u.entry_id
"""


class DeadLetters(msgspec.Struct):
    """Where dead letters of a batch go, and who is writing them."""

    stream: str
    owner: str
    lease_seconds: float
    # Given the plan, the entries to dead-letter: {entry id: error}.
    choose: Any
    # The `event` value of every entry, as received, stored in the ledger with its dead letter.
    raws: dict[bytes, bytes] = {}


async def lease_dead_letters(
    conn: asyncpg.Connection, spec: DeadLetters, dead: dict[bytes, str]
) -> tuple[set[bytes], set[bytes]]:
    """Record dead letters; return (ids this consumer is to publish, ids already published).
    The others are being published by another live consumer, which will acknowledge them."""
    ids = sorted(dead)
    texts = [i.decode() for i in ids]
    events = [spec.raws.get(i, b"") for i in ids]
    args = (spec.stream, spec.owner, texts, [dead[i] for i in ids], spec.lease_seconds, events)
    publish = {r[0].encode() for r in await conn.fetch(_LEASE_DEAD_LETTERS, *args)}
    published: set[bytes] = set()
    if len(publish) < len(ids):
        published = {r[0].encode() for r in await conn.fetch(_PUBLISHED, spec.stream, texts)}
    return publish, published


async def mark_published(pool: asyncpg.Pool, stream: str, dlq_ids: dict[bytes, bytes]) -> None:
    """Record that these dead letters are in the dead-letter stream: {entry id: its dlq id}."""
    ids = sorted(dlq_ids)
    await pool.execute(
        _MARK_PUBLISHED, stream, [i.decode() for i in ids], [as_text(dlq_ids[i]) for i in ids]
    )


async def dead_lettered(conn: asyncpg.Connection, keys: Iterable[tuple[Any, Any]]) -> set[tuple]:
    """Of (stream, entry id) keys, those the ledger has (a live projector dead-lettered them).
    Keys without a stream (a rebuild's file lines) are never in it. Most streams have no dead
    letter at all: one cheap question spares sending every entry id (a rebuild's 20 000)."""
    keys = list(keys)
    streams = list({s for s, _ in keys if s})
    if not streams or not await conn.fetchval(_ANY_DEAD_LETTER, streams):
        return set()
    keys = [(s, as_text(i)) for s, i in keys if s]
    rows = await conn.fetch(_DEAD_LETTERED, [s for s, _ in keys], [i for _, i in keys])
    return {(r[0], r[1].encode()) for r in rows}
