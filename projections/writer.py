"""Apply a batch of events to PostgreSQL: one transaction, set-based statements, no per-event trip.

Concurrency: several projectors may write the same aggregates (a reclaim, a duplicate delivery).
Every upsert keeps the state with the highest seq, and each state is a fold of the true prefix of
its aggregate, so the race is harmless. The participants a batch writes or names are locked first,
all in one ordered statement, so a rename and an order naming that participant serialize (the copy
is never stale) and two batches never wait for each other in a cycle.

Pipelining (projections/pipeline.py): a batch applied with a `Turn` may fold on the plan of the
batch before it, still being written, and commits only after it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Collection
from typing import Any

import asyncpg
import msgspec

from projections.documents import (
    CUSTOMER_V2_UNKNOWN,
    PARTICIPANT_V1_UNKNOWN,
    render_order,
    render_participant,
)
from projections.events import Event
from projections.fold import OrderState, ParticipantState, Plan, plan_batch
from projections.invalidation import messages, notify
from projections.ledger import DeadLetters, lease_dead_letters
from projections.pipeline import Turn, overlay
from projections.tables import READ_SCHEMA

log = logging.getLogger("orderview.writer")

_state_encoder = msgspec.msgpack.Encoder()
_order_decoder = msgspec.msgpack.Decoder(OrderState)

_LOAD_ORDERS = """
SELECT state FROM {orders}
WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
"""
_LOAD_PARTICIPANTS = """
SELECT tenant, id, seq, name, email, updated_at FROM {participants}
WHERE seq > 0 AND (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
"""
_UPSERT_PARTICIPANTS = """
INSERT INTO {participants} AS p
    (tenant, id, seq, name, email, updated_at, participant_v1, customer_v2)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[],
                     $6::timestamptz[], $7::bytea[], $8::bytea[])
ON CONFLICT (tenant, id) DO UPDATE SET
    seq = EXCLUDED.seq, name = EXCLUDED.name, email = EXCLUDED.email,
    updated_at = EXCLUDED.updated_at, participant_v1 = EXCLUDED.participant_v1,
    customer_v2 = EXCLUDED.customer_v2
WHERE p.seq < EXCLUDED.seq
"""
# Every participant a batch writes (exclusively) or copies into its orders (shared) is locked in
# one statement, in one global order, before any row is written: locks taken in several steps
# (upsert, then placeholders, then FOR SHARE) deadlocked between concurrent projectors, one batch
# renaming P1 and naming P2 while another renamed P2 and named P1. Advisory locks need no row, so
# a participant with no event yet needs no placeholder. Volatile output expressions are evaluated
# after the ORDER BY sort, so the locks are taken in key order.
PARTICIPANT_LOCKS = 0x6F767031  # the advisory lock class of participants ("ovp1")
_LOCK_PARTICIPANTS = """
SELECT CASE WHEN s.exclusive THEN pg_advisory_xact_lock($4, s.key)
            ELSE pg_advisory_xact_lock_shared($4, s.key) END
FROM (SELECT hashtext(u.tenant || ':' || u.id) AS key, bool_or(u.exclusive) AS exclusive
      FROM unnest($1::text[], $2::bigint[], $3::bool[]) AS u (tenant, id, exclusive)
      GROUP BY 1) s
ORDER BY s.key
"""
# The fan-out: a participant's change reaches every order that names it, in this transaction.
_FAN_OUT = """
UPDATE {orders} o SET participant_name = p.name, participant_email = p.email,
    participant_v1 = p.participant_v1, customer_v2 = p.customer_v2
FROM {participants} p
WHERE (p.tenant, p.id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
  AND o.tenant = p.tenant AND o.participant_id = p.id
"""
# A rebuild's bulk path copies each new order's participant as it stands into the order's row
# (what _UPSERT_ORDERS joins), and runs no fan-out per batch (it would scan orders, which have no
# index on participant_id yet): the participants changed after their orders were written are
# copied into them once, at the end, here.
_PARTICIPANT_COPIES = """
SELECT tenant, id, name, email, participant_v1, customer_v2 FROM {participants}
WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
"""
_PARTICIPANT_COLUMNS = ["participant_name", "participant_email", "participant_v1", "customer_v2"]
_COPY_ALL_PARTICIPANTS = """
UPDATE {orders} o SET participant_name = p.name, participant_email = p.email,
    participant_v1 = p.participant_v1, customer_v2 = p.customer_v2
FROM {participants} p
WHERE o.tenant = p.tenant AND o.participant_id = p.id
  AND (o.participant_v1, o.customer_v2) IS DISTINCT FROM (p.participant_v1, p.customer_v2)
"""
_ORDER_COLUMNS = [
    "tenant",
    "id",
    "seq",
    "type",
    "status",
    "payment_status",
    "currency",
    "order_number",
    "event_key",
    "participant_id",
    "location_id",
    "scheduled_at",
    "duration",
    "subtotal",
    "tax_total",
    "total",
    "submitted_at",
    "confirmed_at",
    "cancelled_at",
    "created_at",
    "updated_at",
    "state",
    "doc_v1",
    "items_v1",
    "doc_v2",
]
_ORDER_TYPES = [
    "text",
    "bigint",
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "bigint",
    "text",
    "timestamptz",
    "integer",
    "numeric",
    "numeric",
    "numeric",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "bytea",
    "bytea",
    "bytea",
    "bytea",
]
# Numerics travel as text and are cast by PostgreSQL: asyncpg's binary numeric encoder goes through
# Decimal.as_tuple() per value, about 4x the cost of str() plus a text element, and the amounts
# were the most expensive columns to encode. The cast is exact (text is the numeric's own form).
_PARAM_TYPES = {"numeric": "text[]::numeric"}
_UPSERT_ORDERS = f"""
INSERT INTO {{orders}} AS o ({", ".join(_ORDER_COLUMNS)},
    participant_name, participant_email, participant_v1, customer_v2)
SELECT u.*, p.name, p.email,
       coalesce(p.participant_v1, 'null'::bytea),
       coalesce(p.customer_v2, '"customerName":null,"customerEmail":null'::bytea)
FROM unnest({", ".join(f"${n}::{_PARAM_TYPES.get(t, t)}[]" for n, t in enumerate(_ORDER_TYPES, 1))})
     AS u ({", ".join(_ORDER_COLUMNS)})
LEFT JOIN {{participants}} p ON p.tenant = u.tenant AND p.id = u.participant_id
ON CONFLICT (tenant, id) DO UPDATE SET
    {", ".join(f"{c} = EXCLUDED.{c}" for c in _ORDER_COLUMNS[2:])},
    participant_name = EXCLUDED.participant_name, participant_email = EXCLUDED.participant_email,
    participant_v1 = EXCLUDED.participant_v1, customer_v2 = EXCLUDED.customer_v2
WHERE o.seq < EXCLUDED.seq
"""


class Statements(msgspec.Struct, frozen=True):
    """The writer's statements on the read tables of one schema (the live one, or a rebuild's)."""

    load_orders: str
    load_participants: str
    upsert_participants: str
    fan_out: str
    upsert_orders: str
    copy_all_participants: str
    participant_copies: str


@functools.cache
def statements(schema: str = READ_SCHEMA) -> Statements:
    """The writer's statements on the tables of `schema`."""
    names = {"orders": f"{schema}.orders", "participants": f"{schema}.participants"}
    sql = (_LOAD_ORDERS, _LOAD_PARTICIPANTS, _UPSERT_PARTICIPANTS, _FAN_OUT, _UPSERT_ORDERS)
    sql += (_COPY_ALL_PARTICIPANTS, _PARTICIPANT_COPIES)
    return Statements(*(s.format(**names) for s in sql))


# Every batch holds this lock shared for its whole transaction; a rebuild's swap takes it exclusive,
# so the swap waits for the batches in flight to commit and the next ones wait for the swap: a
# batch loads its states and writes them in the same schema, before the swap or after it.
READ_MODEL_LOCK = 0x6F767277  # "ovrw"
_HOLD_READ_MODEL = "SELECT pg_advisory_xact_lock_shared($1)"

# Errors after which the same batch is simply tried again.
RETRYABLE = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.UniqueViolationError,
)


async def load_states(
    conn: asyncpg.Connection,
    events: Collection[Event],
    schema: str = READ_SCHEMA,
    base: Plan | None = None,
) -> tuple[dict[tuple[str, int], OrderState], dict[tuple[str, int], ParticipantState]]:
    """The stored states of every aggregate the events touch, overlaid with those of `base`:
    the plan of a batch being written meanwhile (see pipeline.overlay)."""
    sql = statements(schema)
    order_keys = {(e.tenant, e.aggregate_id) for e in events if e.kind == "order"}
    part_keys = {(e.tenant, e.aggregate_id) for e in events if e.kind == "participant"}
    orders: dict[tuple[str, int], OrderState] = {}
    participants: dict[tuple[str, int], ParticipantState] = {}
    if order_keys:
        for row in await conn.fetch(sql.load_orders, *_columns(order_keys, 2)):
            state = _order_decoder.decode(row[0])
            orders[(state.tenant, state.id)] = state
    if part_keys:
        for row in await conn.fetch(sql.load_participants, *_columns(part_keys, 2)):
            participants[(row[0], row[1])] = ParticipantState(*row)
    if base is not None:
        orders = overlay(orders, base.orders)
        participants = overlay(participants, base.participants)
    return orders, participants


def _columns(rows, width: int) -> list[list[Any]]:
    """Rows to the column arrays that unnest() takes."""
    rows = sorted(rows)
    return [[r[i] for r in rows] for i in range(width)] if rows else [[] for _ in range(width)]


def _order_row(state: OrderState) -> tuple:
    """The row of an order's upsert; amounts as text (see _PARAM_TYPES)."""
    docs = render_order(state)
    return (
        state.tenant, state.id, state.seq, state.type, state.status, state.payment_status,
        state.currency, state.order_number, state.event_key, state.participant_id,
        state.location_id, state.scheduled_at, state.duration, str(docs.subtotal),
        str(docs.tax_total), str(docs.total), state.submitted_at, state.confirmed_at,
        state.cancelled_at, state.created_at, state.updated_at, _state_encoder.encode(state),
        docs.doc_v1, docs.items_v1, docs.doc_v2,
    )  # fmt: skip


def _participant_row(state: ParticipantState) -> tuple:
    docs = render_participant(state)
    return (
        state.tenant, state.id, state.seq, state.name, state.email, state.updated_at,
        docs.participant_v1, docs.customer_v2,
    )  # fmt: skip


class Rows(msgspec.Struct):
    """A plan's rows, rendered (the CPU part of a write)."""

    participants: list[tuple]
    orders: list[tuple]


def render_plan(plan: Plan) -> Rows:
    """Render the rows a plan writes: documents of both dialects, states, amounts."""
    return Rows(
        [_participant_row(s) for s in plan.participants.values()],
        [_order_row(s) for s in plan.orders.values()],
    )


async def write_plan(
    conn: asyncpg.Connection, plan: Plan, rows: Rows | None = None, schema: str = READ_SCHEMA
) -> None:
    """Write a plan's states inside the caller's transaction: participants first, then orders."""
    sql = statements(schema)
    if rows is None:
        rows = render_plan(plan)
    await lock_participants(conn, plan)
    if rows.participants:
        await conn.execute(sql.upsert_participants, *_columns(rows.participants, 8))
        await conn.execute(sql.fan_out, *_columns(plan.participants.keys(), 2))
    if rows.orders:
        await conn.execute(sql.upsert_orders, *_columns(rows.orders, len(_ORDER_COLUMNS)))
    # The API processes' caches learn of it if and only if this transaction commits.
    await notify(conn, messages(plan))


async def copy_plan(
    conn: asyncpg.Connection, plan: Plan, rows: Rows, stored: set[tuple[str, int]], schema: str
) -> None:
    """A rebuild's bulk write into `schema`, whose orders have no secondary index yet: orders
    not `stored` yet go in by COPY with a copy of their participant as it stands (those changed
    later are copied by copy_all_participants), the others and the participants by the upserts."""
    sql = statements(schema)
    if rows.participants:
        await conn.execute(sql.upsert_participants, *_columns(rows.participants, 8))
    new, known = [], []
    for key, row in zip(plan.orders, rows.orders, strict=True):
        (known if key in stored else new).append(row)
    if new:
        names = {(r[0], r[9]) for r in new if r[9] is not None}  # tenant, participant_id
        copies = await conn.fetch(sql.participant_copies, *_columns(names, 2)) if names else []
        copy = {(c[0], c[1]): tuple(c[2:]) for c in copies}
        records = [(*r, *copy.get((r[0], r[9]), _NO_PARTICIPANT)) for r in new]
        columns = _ORDER_COLUMNS + _PARTICIPANT_COLUMNS
        await conn.copy_records_to_table(
            "orders", schema_name=schema, columns=columns, records=records
        )
    if known:
        await conn.execute(sql.upsert_orders, *_columns(known, len(_ORDER_COLUMNS)))


# The participant columns of an order naming no participant, or one with no event yet.
_NO_PARTICIPANT = (None, None, PARTICIPANT_V1_UNKNOWN, CUSTOMER_V2_UNKNOWN)


async def copy_all_participants(conn: asyncpg.Connection, schema: str) -> None:
    """Copy every participant of `schema` into the orders that name it (after a bulk write)."""
    await conn.execute(statements(schema).copy_all_participants)


async def lock_participants(conn: asyncpg.Connection, plan: Plan) -> None:
    """Lock the participants the plan writes (exclusive) and those its orders name (shared), so
    that a rename and an order naming that participant serialize and the copy is never stale."""
    locks = {(s.tenant, s.participant_id): False for s in plan.orders.values() if s.participant_id}
    locks.update(dict.fromkeys(plan.participants, True))
    if locks:
        rows = [(tenant, pid, exclusive) for (tenant, pid), exclusive in locks.items()]
        await conn.execute(_LOCK_PARTICIPANTS, *_columns(rows, 3), PARTICIPANT_LOCKS)


async def apply_batch(
    pool: asyncpg.Pool,
    events: list[tuple[Any, Event]],
    dead_letters: DeadLetters | None = None,
    attempts: int = 5,
    turn: Turn | None = None,
) -> tuple[Plan, dict[bytes, str], tuple[set[bytes], set[bytes]]]:
    """Fold and write a batch and its dead letters in one transaction; retry it whole on a
    deadlock or a race (only out of a pipeline: in one, the caller applies it again alone).
    `turn` is the batch's place in a pipeline; it is settled (committed or failed) here.
    Returns the plan, the dead letters, and lease_dead_letters' answer."""
    if turn is not None:
        attempts = 1
    for attempt in range(1, attempts + 1):
        this = turn or Turn()  # alone: no batch before it, nothing to wait for
        try:
            async with pool.acquire() as conn, conn.transaction():
                # The batch before holds the read-model lock once it has a plan: asking for it
                # only then, this batch never waits behind a swap that waits for this batch.
                base = await this.base()
                await conn.execute(_HOLD_READ_MODEL, READ_MODEL_LOCK)
                orders, participants = await load_states(conn, [e for _, e in events], base=base)
                plan = plan_batch(events, orders, participants)
                this.planned.set_result(plan)
                rows = render_plan(plan)
                await this.may_write()
                await write_plan(conn, plan, rows)
                dead = dead_letters.choose(plan) if dead_letters else {}
                leased = (
                    await lease_dead_letters(conn, dead_letters, dead) if dead else (set(), set())
                )
                this.written.set()
                await this.may_commit()
        except BaseException as exc:
            this.failed()
            if not isinstance(exc, RETRYABLE) or attempt == attempts:
                raise
            log.warning("batch conflicted, retrying", extra={"error": str(exc), "attempt": attempt})
            await asyncio.sleep(0.01 * attempt)
            continue
        this.committed()
        return plan, dead, leased
    raise AssertionError("unreachable")
