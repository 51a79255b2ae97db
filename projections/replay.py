"""A rebuild's fold: entries applied to a rebuild's schema with the live projector's decisions.

The same validation (consumer.decode_entries), fold (fold.plan_batch), rendering and writer as the
live projector, so the result is the same: duplicates by seq, unknown types advance seq, poison is
skipped, a gap waits (across windows) for its predecessor. An entry the live projector
dead-lettered (the ledger has it) is dead here too, at once, and no dead letter is written again:
poison and gaps in entries the live group has not settled yet are left to the live projector.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import asyncpg

from projections.consumer import decode_entries
from projections.events import Event
from projections.fold import Plan, plan_batch
from projections.tables import DEAD_LETTERS
from projections.writer import copy_plan, load_states, render_plan, write_plan

# An entry's key: (stream, entry id) for a stream entry, (None, line number) for a file line.
Key = tuple[str | None, Any]

_DEAD = f"""
SELECT stream, entry_id FROM {DEAD_LETTERS}
WHERE (stream, entry_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""


class Replay:
    """Folds windows of entries into the tables of `schema` through one connection."""

    def __init__(self, conn: asyncpg.Connection, schema: str):
        self.conn = conn
        self.schema = schema
        self.held: dict[Key, Event] = {}
        self.counts: Counter[str] = Counter()

    async def apply(
        self, stream: str | None, entries: list[tuple[Any, dict[bytes, bytes]]], bulk: bool
    ) -> Plan:
        """Fold entries (and the gaps held so far) into the schema, in the caller's transaction.
        `bulk`: the schema has no secondary index yet (writer.copy_plan), else the live path."""
        batch = decode_entries(entries)
        self.counts["poison"] += len(batch.poison)
        candidates: dict[Key, Event] = {(stream, k): e for k, e in batch.events.items()}
        candidates.update(self.held)
        for key in await self._dead(candidates):
            candidates.pop(key)
            self.held.pop(key, None)
            self.counts["dead"] += 1
        orders, participants = await load_states(self.conn, candidates.values(), self.schema)
        plan = plan_batch(list(candidates.items()), orders, participants)
        rows = render_plan(plan)
        if bulk:
            await copy_plan(self.conn, plan, rows, set(orders), self.schema)
        else:
            await write_plan(self.conn, plan, rows, self.schema)
        self.held = {key: candidates[key] for key in plan.held}
        self.counts["applied"] += len(plan.applied)
        self.counts["duplicates"] += len(plan.duplicates)
        self.counts["unknown_types"] += plan.unknown_types
        return plan

    async def _dead(self, candidates: dict[Key, Event]) -> set[Key]:
        """The candidates the dead-letter ledger has (stream entries only)."""
        keys = [(s, i.decode() if isinstance(i, bytes) else i) for s, i in candidates if s]
        if not keys:
            return set()
        rows = await self.conn.fetch(_DEAD, [s for s, _ in keys], [i for _, i in keys])
        return {(r[0], r[1].encode()) for r in rows}
