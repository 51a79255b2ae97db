"""The dead-letter ledger for operators: find, replay and drop dead letters.

A dead letter lives in two places: its row in `orderview.dead_letters` (the event as received,
the reason, what became of it) and its entry in `<stream>:dlq`. Every Redis command here names
one stream's own keys (the stream, or its `:dlq`), so it works on a Redis Cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime

import asyncpg
import msgspec
import redis.asyncio as redis

from projections.settle import dlq_key
from projections.tables import DEAD_LETTERS
from services.publish import route

ENTRY_ID = re.compile(r"\A\d{1,20}-\d{1,20}\Z")
CHUNK = 500


class BadInput(Exception):
    """Input an operator command refuses; its message is one line (exit code 2)."""


class Letter(msgspec.Struct, kw_only=True):
    """One dead letter as `dlq list --json` prints it."""

    stream: str
    entry_id: str
    reason: str
    error: str
    tenant: str | None = None
    type: str | None = None
    kind: str | None = None
    aggregate_id: int | None = None
    seq: int | None = None
    dead_lettered_at: datetime
    state: str  # waiting, replayed or dropped
    replayed_to: str | None = None
    replayed_as: str | None = None
    replayed_at: datetime | None = None
    dropped_at: datetime | None = None


_COLUMNS = """stream, entry_id, error, reason, event, dlq_id, lease_owner, created_at,
    published_at, replayed_at, replayed_to, replayed_as, dropped_at"""
_LIST = f"""
SELECT {_COLUMNS} FROM {DEAD_LETTERS}
WHERE stream = ANY($1::text[]) AND published_at IS NOT NULL
  AND ($2::text IS NULL OR reason = $2 OR starts_with(error, $2))
ORDER BY created_at DESC, split_part(entry_id, '-', 1)::numeric DESC,
         split_part(entry_id, '-', 2)::numeric DESC
"""
_BY_ID = f"""
SELECT {_COLUMNS} FROM {DEAD_LETTERS}
WHERE stream = ANY($1::text[]) AND entry_id = ANY($2::text[]) AND published_at IS NOT NULL
"""
# Rows to act on, locked; a concurrent replay or drop waits, then sees them changed.
_LOCK = f"""
SELECT {_COLUMNS} FROM {DEAD_LETTERS} d
WHERE (stream, entry_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND dropped_at IS NULL AND (NOT $3 OR replayed_at IS NULL)
ORDER BY stream, created_at, entry_id
FOR UPDATE
"""
_REPLAYED = f"""
UPDATE {DEAD_LETTERS} d SET replayed_at = now(), replayed_to = u.target, replayed_as = u.new_id
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u (stream, entry_id, target, new_id)
WHERE d.stream = u.stream AND d.entry_id = u.entry_id
"""
_DROPPED = f"""
UPDATE {DEAD_LETTERS} SET dropped_at = now()
WHERE (stream, entry_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""
# Rows published before migration 0006 carry neither the event nor the dlq entry's id.
_LEGACY = f"""
SELECT DISTINCT stream FROM {DEAD_LETTERS}
WHERE stream = ANY($1::text[]) AND published_at IS NOT NULL AND dlq_id IS NULL
  AND dropped_at IS NULL
"""
_FILL_LEGACY = f"""
UPDATE {DEAD_LETTERS} d SET dlq_id = u.dlq_id, event = coalesce(d.event, u.event)
FROM unnest($2::text[], $3::text[], $4::bytea[]) AS u (entry_id, dlq_id, event)
WHERE d.stream = $1 AND d.entry_id = u.entry_id AND d.dlq_id IS NULL
"""


def state_of(row: asyncpg.Record) -> str:
    """waiting, replayed or dropped: what became of a dead letter (a drop comes last)."""
    if row["dropped_at"] is not None:
        return "dropped"
    return "replayed" if row["replayed_at"] is not None else "waiting"


def letter(row: asyncpg.Record) -> Letter:
    """A ledger row, with the tenant, type and aggregate its event names, where it names them."""
    names = event_names(row["event"])
    return Letter(
        stream=row["stream"],
        entry_id=row["entry_id"],
        reason=row["reason"],
        error=row["error"],
        **names,
        dead_lettered_at=row["created_at"],
        state=state_of(row),
        replayed_to=row["replayed_to"],
        replayed_as=row["replayed_as"],
        replayed_at=row["replayed_at"],
        dropped_at=row["dropped_at"],
    )


def history_of(row: asyncpg.Record) -> list[tuple[datetime, str]]:
    """What happened to a dead letter, in order: (when, what)."""
    dlq = dlq_key(row["stream"])
    history = [(row["created_at"], f"dead-lettered by consumer {row['lease_owner']}")]
    if row["dlq_id"] is not None:
        history.append((row["published_at"], f"written to {dlq} as {row['dlq_id']}"))
    if row["replayed_at"] is not None:
        what = f"replayed as entry {row['replayed_as']} of {row['replayed_to']}"
        history.append((row["replayed_at"], what))
    if row["dropped_at"] is not None:
        history.append((row["dropped_at"], f"dropped (deleted from {dlq})"))
    return history


def event_names(raw: bytes | None) -> dict[str, object]:
    """tenant, type, kind, aggregate_id and seq of an event, those it names with the right type
    (a poison event may be anything: not JSON, not an object, fields of other types)."""
    try:
        obj = msgspec.json.decode(raw) if raw else None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        return {}
    names: dict[str, object] = {}
    for key, kind in (("tenant", str), ("type", str), ("aggregate_id", int), ("seq", int)):
        value = obj.get(key)
        if isinstance(value, kind) and not isinstance(value, bool):
            names[key] = value
    if isinstance(names.get("type"), str):
        names["kind"] = names["type"].partition(".")[0]  # type: ignore[union-attr]
    return names


def check_stream(streams: tuple[str, ...], stream: str | None) -> tuple[str, ...]:
    """The streams a command looks at: all configured ones, or the one `--stream` names."""
    if stream is None:
        return streams
    if stream not in streams:
        raise BadInput(
            f"stream {stream!r} is not one this service reads (ORDERVIEW_STREAMS: "
            f"{', '.join(streams)})"
        )
    return (stream,)


async def listed(
    conn: asyncpg.Connection, streams: Sequence[str], reason: str | None
) -> list[asyncpg.Record]:
    """Dead letters of these streams, newest first; `reason` is a class or an error's start."""
    return await conn.fetch(_LIST, list(streams), reason)


async def resolve(
    conn: asyncpg.Connection, streams: tuple[str, ...], ids: Sequence[str]
) -> list[asyncpg.Record]:
    """The dead letters named by source-stream entry ids; refuses unknown or ambiguous ids."""
    for entry_id in ids:
        if not ENTRY_ID.match(entry_id):
            raise BadInput(f"ENTRY_ID {entry_id!r} is not a stream entry id (like 1700000000000-0)")
    rows = await conn.fetch(_BY_ID, list(streams), list(ids))
    found: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        found.setdefault(row["entry_id"], []).append(row)
    for entry_id in ids:
        matches = found.get(entry_id, [])
        if not matches:
            raise BadInput(f"no dead letter with entry id {entry_id} in {', '.join(streams)}")
        if len(matches) > 1:
            names = " and ".join(sorted(r["stream"] for r in matches))
            raise BadInput(
                f"entry id {entry_id} is a dead letter in {names}: pick one with --stream"
            )
    return [found[entry_id][0] for entry_id in dict.fromkeys(ids)]


async def backfill(conn: asyncpg.Connection, client: redis.Redis, streams: Sequence[str]) -> None:
    """Copy the event and dlq id of rows leased before migration 0006 from `<stream>:dlq`."""
    for row in await conn.fetch(_LEGACY, list(streams)):
        stream = row["stream"]
        entries, ids, events = [], [], []
        start = "-"
        while batch := await client.xrange(dlq_key(stream), start, "+", count=1000):
            for dlq_id, fields in batch:
                if b"entry_id" in fields:
                    entries.append(fields[b"entry_id"].decode())
                    ids.append(dlq_id.decode())
                    events.append(fields.get(b"event", b""))
            start = "(" + batch[-1][0].decode()
        await conn.execute(_FILL_LEGACY, stream, entries, ids, events)


def _chunks(rows: Sequence[asyncpg.Record]) -> Iterable[Sequence[asyncpg.Record]]:
    for i in range(0, len(rows), CHUNK):
        yield rows[i : i + CHUNK]


def _keys(rows: Sequence[asyncpg.Record]) -> tuple[list[str], list[str]]:
    return [r["stream"] for r in rows], [r["entry_id"] for r in rows]


async def replay(
    conn: asyncpg.Connection,
    client: redis.Redis,
    streams: tuple[str, ...],
    chosen: Sequence[asyncpg.Record],
) -> list[tuple[asyncpg.Record, str, str]]:
    """Append each waiting dead letter's event again (routed by the sharding rule; an event that
    cannot be routed goes back to its own stream) and mark it replayed; return (row, stream, new
    entry id) of each. A letter already replayed or dropped is left alone. The rows are locked
    while their events are appended, so two operators never append the same letter twice."""
    done: list[tuple[asyncpg.Record, str, str]] = []
    for chunk in _chunks(chosen):
        async with conn.transaction():
            rows = await conn.fetch(_LOCK, *_keys(chunk), True)
            if not rows:
                continue
            targets = [route(streams, r["event"] or b"", r["stream"]) for r in rows]
            pipe = client.pipeline(transaction=False)
            for row, target in zip(rows, targets, strict=True):
                pipe.xadd(target, {"event": row["event"] or b""})
            new_ids = [i.decode() for i in await pipe.execute()]
            await conn.execute(_REPLAYED, *_keys(rows), targets, new_ids)
        done.extend(zip(rows, targets, new_ids, strict=True))
    return done


async def drop(
    conn: asyncpg.Connection, client: redis.Redis, chosen: Sequence[asyncpg.Record]
) -> list[asyncpg.Record]:
    """Delete dead letters from `<stream>:dlq` and mark them dropped; return those dropped."""
    done: list[asyncpg.Record] = []
    for chunk in _chunks(chosen):
        async with conn.transaction():
            rows = await conn.fetch(_LOCK, *_keys(chunk), False)
            by_stream: dict[str, list[str]] = {}
            for row in rows:
                if row["dlq_id"] is not None:
                    by_stream.setdefault(row["stream"], []).append(row["dlq_id"])
            for stream, dlq_ids in by_stream.items():
                await client.xdel(dlq_key(stream), *dlq_ids)
            await conn.execute(_DROPPED, *_keys(rows))
        done.extend(rows)
    return done
