"""`orderview status [--json]`: what an operator asks first, from cheap sources only.

Per stream: XLEN, XINFO GROUPS and XINFO CONSUMERS (each names the stream's own key), the dead
letters waiting by reason (the ledger's partial index). Read-model row counts are PostgreSQL's
statistics (no count(*)); the last applied event and the consumers' liveness come from the
heartbeat rows the projectors write (`projections/progress.py`).
"""

from __future__ import annotations

import json
import sys
import traceback
from datetime import datetime

import asyncpg
import msgspec
import redis.asyncio as redis

from orderview.db import redis_client
from orderview.settings import Settings
from projections import rebuilds
from projections.progress import HEARTBEAT_SECONDS
from projections.settle import dlq_key
from projections.tables import CONSUMERS, DEAD_LETTERS, ORDERS, PARTICIPANTS, REBUILDS
from services.dlq_commands import print_table

# A consumer is live when its heartbeat is this recent: three heartbeats, or three reads when
# ORDERVIEW_BLOCK_MS is longer (a heartbeat is written between reads).
LIVE_HEARTBEATS = 3


class Consumer(msgspec.Struct):
    """One consumer of a stream's group: Redis's view and its own heartbeat."""

    name: str
    live: bool
    state: str  # live, stopped, silent (no heartbeat for too long), or unknown (no heartbeat row)
    pending: int | None = None
    idle_ms: int | None = None
    heartbeat_seconds_ago: float | None = None


class Stream(msgspec.Struct):
    """One configured stream and its consumer group."""

    stream: str
    length: int
    group: bool
    lag: int | None
    pending: int | None
    dead_letter_stream_length: int
    dead_letters_waiting: dict[str, int]
    live_consumers: int
    consumers: list[Consumer]


class ReadModel(msgspec.Struct):
    """Row counts from statistics ("about"), and the time of the last applied event."""

    orders_about: int
    participants_about: int
    last_applied_at: datetime | None
    last_event_at: datetime | None


class Release(msgspec.Struct):
    """Which release built the read model, and whether this one would render it the same."""

    read_model: str | None  # the fingerprint recorded on the read model's schema
    built_at: str | None
    this_release: str
    rebuild_due: bool  # they differ: run `orderview rebuild`


class Status(msgspec.Struct):
    streams: list[Stream]
    read_model: ReadModel
    rebuild: list[dict] | None  # rows of orderview.rebuilds in progress; None: no such table
    ok: bool  # every stream has a live consumer
    release: Release | None = None


_HEARTBEATS = f"""
SELECT stream, consumer, stopped_at, applied_at, event_at,
       extract(epoch FROM now() - seen_at)::float8 AS age
FROM {CONSUMERS} WHERE stream = ANY($1::text[])
"""
_WAITING = f"""
SELECT stream, reason, count(*) AS n FROM {DEAD_LETTERS}
WHERE stream = ANY($1::text[])
  AND published_at IS NOT NULL AND replayed_at IS NULL AND dropped_at IS NULL
GROUP BY 1, 2
"""
# n_live_tup (kept by the statistics system, current within seconds) where it is known, else the
# planner's reltuples (-1 before the first VACUUM/ANALYZE).
_ROWS = """
SELECT coalesce(s.n_live_tup, greatest(c.reltuples, 0))::bigint
FROM pg_class c LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = to_regclass($1)
"""


def live_seconds(settings: Settings) -> float:
    """How recent a heartbeat must be for its consumer to count as live."""
    return LIVE_HEARTBEATS * max(HEARTBEAT_SECONDS, settings.block_ms / 1000)


async def gather(settings: Settings) -> Status:
    """The status of every configured stream and of the read model."""
    conn = await asyncpg.connect(settings.require("database_url"), timeout=10)
    client = redis_client(settings, "orderview-status")
    try:
        streams = list(settings.streams)
        beats = await conn.fetch(_HEARTBEATS, streams)
        waiting = await conn.fetch(_WAITING, streams)
        window = live_seconds(settings)
        found = [
            await stream_status(client, settings.consumer_group, s, beats, waiting, window)
            for s in streams
        ]
        model = ReadModel(
            orders_about=await conn.fetchval(_ROWS, ORDERS) or 0,
            participants_about=await conn.fetchval(_ROWS, PARTICIPANTS) or 0,
            last_applied_at=max((b["applied_at"] for b in beats if b["applied_at"]), default=None),
            last_event_at=max((b["event_at"] for b in beats if b["event_at"]), default=None),
        )
        rebuild = await rebuild_in_progress(conn)
        built = await rebuilds.rebuild_status(conn)
    finally:
        await client.aclose()
        await conn.close()
    release = Release(
        built["read_model_release"],
        built["read_model_built_at"],
        built["this_release"],
        rebuild_due=built["read_model_release"] != built["this_release"],
    )
    return Status(found, model, rebuild, ok=all(s.live_consumers for s in found), release=release)


async def rebuild_in_progress(conn: asyncpg.Connection) -> list[dict] | None:
    """The slot `orderview rebuild` fills: rows of `orderview.rebuilds` with no `finished_at`
    (None when the table does not exist)."""
    if await conn.fetchval("SELECT to_regclass($1)", REBUILDS) is None:
        return None
    if not await rebuilds.running(conn):  # an unfinished row without its process was killed
        return []
    rows = [json.loads(r[0]) for r in await conn.fetch(f"SELECT to_jsonb(r) FROM {REBUILDS} r")]
    return [r for r in rows if r.get("finished_at") is None]


async def stream_status(
    client: redis.Redis, group: str, stream: str, beats, waiting, window: float
) -> Stream:
    """One stream: Redis's numbers, the dead letters waiting, and its consumers."""
    info = await _group(client, stream, group)
    redis_consumers = {}
    if info is not None:
        for c in await client.xinfo_consumers(stream, group):
            redis_consumers[_text(c["name"])] = c
    mine = {b["consumer"]: b for b in beats if b["stream"] == stream}
    consumers = [
        consumer_status(name, redis_consumers.get(name), mine.get(name), window)
        for name in sorted({*redis_consumers, *mine})
    ]
    return Stream(
        stream=stream,
        length=await client.xlen(stream),
        group=info is not None,
        lag=info.get("lag") if info else None,
        pending=info.get("pending") if info else None,
        dead_letter_stream_length=await client.xlen(dlq_key(stream)),
        dead_letters_waiting={w["reason"]: w["n"] for w in waiting if w["stream"] == stream},
        live_consumers=sum(c.live for c in consumers),
        consumers=consumers,
    )


def consumer_status(name: str, in_redis: dict | None, beat, window: float) -> Consumer:
    """Live: its heartbeat is recent and it has not stopped (see README, `orderview status`)."""
    if beat is None:
        state = "unknown"
    elif beat["stopped_at"] is not None:
        state = "stopped"
    else:
        state = "live" if beat["age"] <= window else "silent"
    return Consumer(
        name=name,
        live=state == "live",
        state=state,
        pending=in_redis.get("pending") if in_redis else None,
        idle_ms=in_redis.get("idle") if in_redis else None,
        heartbeat_seconds_ago=round(beat["age"], 1) if beat is not None else None,
    )


async def _group(client: redis.Redis, stream: str, group: str) -> dict | None:
    try:
        groups = await client.xinfo_groups(stream)
    except redis.ResponseError:  # no such stream yet
        return None
    return next((g for g in groups if _text(g["name"]) == group), None)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def print_status(status: Status) -> None:
    """The status as tables for a person."""
    rows = []
    for s in status.streams:
        dead = ", ".join(f"{r} {n}" for r, n in sorted(s.dead_letters_waiting.items())) or "none"
        lag = "?" if s.lag is None else s.lag
        rows.append((s.stream, s.length, lag if s.group else "no group", s.pending, dead,
                     f"{s.live_consumers} of {len(s.consumers)}"))  # fmt: skip
    print_table(("STREAM", "LENGTH", "LAG", "PENDING", "DEAD LETTERS WAITING", "LIVE"), rows)
    print()
    rows = [
        (s.stream, c.name, c.state, _ms(c.idle_ms), c.pending, _ago(c.heartbeat_seconds_ago))
        for s in status.streams
        for c in s.consumers
    ]
    if rows:
        print_table(("STREAM", "CONSUMER", "STATE", "IDLE", "PENDING", "HEARTBEAT"), rows)
    else:
        print("no consumers")
    print()
    m = status.read_model
    print(f"orders        about {m.orders_about:,}")
    print(f"participants  about {m.participants_about:,}")
    print(f"last applied  {_when(m.last_applied_at)} (event time {_when(m.last_event_at)})")
    if status.rebuild is None or not status.rebuild:
        print("rebuild       none in progress")
    else:
        for r in status.rebuild:
            total = f" of {r['total']:,}" if r.get("total") else ""
            rate = f", {r['rate']:,.0f} entries/s" if r.get("rate") else ""
            print(f"rebuild       in progress: {r['phase']}, {r['position']:,}{total}{rate}"
                  f" (from {r['source']}, started {r['started_at']})")  # fmt: skip
    if status.release is not None:
        r = status.release
        print(f"built by      release {r.read_model or 'unknown'} at {r.built_at or '?'}")
        if r.rebuild_due:
            print(f"              this release is {r.this_release}: run `orderview rebuild`")
    bad = [s.stream for s in status.streams if not s.live_consumers]
    if bad:
        print(f"\nno live consumer: {', '.join(bad)}")


def _ms(value: int | None) -> str:
    return "" if value is None else f"{value / 1000:.1f} s"


def _ago(value: float | None) -> str:
    return "none" if value is None else f"{value:.1f} s ago"


def _when(value: datetime | None) -> str:
    return "never" if value is None else value.strftime("%Y-%m-%d %H:%M:%S %Z")


def status_command(settings: Settings, args, run) -> int:
    """Print the status; exit 1 when a stream has no live consumer (servers that do not answer
    and a schema not migrated are `run`'s: exit 2, see `orderview.cli.operator_run`)."""
    try:
        status = run(gather(settings))
    except Exception:  # exit 1 means "no live consumer" to a probe: a defect must not say that
        traceback.print_exc()
        print("orderview: status failed (see above)", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.buffer.write(msgspec.json.encode(status) + b"\n")
    else:
        print_status(status)
    return 0 if status.ok else 1
