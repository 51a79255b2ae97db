"""What a batch changed, told to every API process's document cache: PostgreSQL NOTIFY.

The notifications are issued inside the batch's transaction, so PostgreSQL delivers them if and
only if it commits, to every listening session, in commit order: no crash between the commit and a
later step can lose one (a publish after the commit could be lost that way).

A message is a JSON object on the channel `CHANNEL`:

- `{"t": tenant, "o": [order ids], "p": [participant ids]}`: these orders changed, and every
  order naming one of these participants (a participant's change is copied into them);
- `{"t": tenant}`: anything of that tenant may have changed (a batch too large to list);
- `{}`: anything may have changed (`flush_all`, e.g. after a rebuild swapped the read model).

A message stays under NOTIFY's 8000-byte payload limit: a tenant's ids are split over several
messages, and a tenant needing more than `MAX_MESSAGES_PER_TENANT` is flushed whole instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg
import msgspec

from projections.fold import Plan

CHANNEL = "orderview_cache"
MAX_PAYLOAD = 7900  # bytes; PostgreSQL's limit is 8000 in the default configuration
MAX_MESSAGES_PER_TENANT = 8
_NOTIFY = "SELECT pg_notify($1, m) FROM unnest($2::text[]) AS m"
_encoder = msgspec.json.Encoder()


def messages(plan: Plan) -> list[str]:
    """The notifications telling what `plan` writes, each under `MAX_PAYLOAD` bytes."""
    tenants: dict[str, tuple[set[int], set[int]]] = {}
    for tenant, order_id in plan.orders:
        tenants.setdefault(tenant, (set(), set()))[0].add(order_id)
    for tenant, participant_id in plan.participants:
        tenants.setdefault(tenant, (set(), set()))[1].add(participant_id)
    out: list[str] = []
    for tenant, (orders, participants) in sorted(tenants.items()):
        out += tenant_messages(tenant, sorted(orders), sorted(participants))
    return out


def tenant_messages(tenant: str, orders: list[int], participants: list[int]) -> list[str]:
    """One tenant's changes as messages; its flush when they would take too many."""
    head = len(_encoder.encode({"t": tenant, "o": [], "p": []}))
    if head + 40 > MAX_PAYLOAD:  # a tenant name near the limit: say "anything may have changed"
        return ["{}"]
    out: list[str] = []
    chunk_o: list[int] = []
    chunk_p: list[int] = []
    size = head
    for kind, value in [("o", v) for v in orders] + [("p", v) for v in participants]:
        width = len(str(value)) + 1
        if size + width > MAX_PAYLOAD:
            out.append(_message(tenant, chunk_o, chunk_p))
            chunk_o, chunk_p, size = [], [], head
        (chunk_o if kind == "o" else chunk_p).append(value)
        size += width
    if chunk_o or chunk_p:
        out.append(_message(tenant, chunk_o, chunk_p))
    if len(out) > MAX_MESSAGES_PER_TENANT:
        return [_encoder.encode({"t": tenant}).decode()]
    return out


def _message(tenant: str, orders: list[int], participants: list[int]) -> str:
    return _encoder.encode({"t": tenant, "o": orders, "p": participants}).decode()


async def notify(conn: asyncpg.Connection, payloads: Iterable[str]) -> None:
    """Issue the notifications in the caller's transaction (sent if and only if it commits)."""
    payloads = list(payloads)
    if payloads:
        await conn.execute(_NOTIFY, CHANNEL, payloads)


async def flush_all(conn: asyncpg.Connection) -> None:
    """Empty the document cache of every API process listening to this database (a rebuild
    calls this in the transaction that swaps the read model, or right after it)."""
    await notify(conn, ["{}"])
