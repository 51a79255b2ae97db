"""A rebuild's fold: entries applied to a rebuild's schema with the live projector's decisions.

The same validation (entries.decode_entries), fold (fold.plan_batch), rendering and writer as the
live projector, so the result is the same: duplicates by seq, unknown types advance seq, poison is
skipped, a gap waits (across windows) for its predecessor. An entry the live projector
dead-lettered (ledger.dead_lettered) is dead here too, at once, and no dead letter is written again:
poison and gaps in entries the live group has not settled yet are left to the live projector.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg

from projections.entries import decode_entries
from projections.events import Event
from projections.fold import Plan, plan_batch
from projections.ledger import dead_lettered
from projections.writer import Rows, copy_plan, load_states, render_plan, write_plan

# An entry's key: (stream, entry id) for a stream entry, (None, line number) for a file line.
Key = tuple[str | None, Any]


@dataclass
class Folded:
    """A window folded and rendered: what to write, and which of its orders are stored already
    (or being written by the window before), so that only the others go in by COPY."""

    plan: Plan
    rows: Rows
    stored: set[tuple[str, int]]


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
        folded = await self.fold(stream, entries)
        await self.write(self.conn, folded, bulk)
        return folded.plan

    async def fold(
        self,
        stream: str | None,
        entries: list[tuple[Any, dict[bytes, bytes]]],
        base: Plan | None = None,
    ) -> Folded:
        """Validate, fold and render entries and the held gaps on the stored states, overlaid
        with `base`: the plan of a window being written meanwhile (on another connection)."""
        batch = decode_entries(entries)
        self.counts["poison"] += len(batch.poison)
        candidates: dict[Key, Event] = {(stream, k): e for k, e in batch.events.items()}
        candidates.update(self.held)
        for key in await dead_lettered(self.conn, candidates):
            candidates.pop(key)
            self.held.pop(key, None)
            self.counts["dead"] += 1
        orders, participants = await load_states(self.conn, candidates.values(), self.schema, base)
        plan = plan_batch(list(candidates.items()), orders, participants)
        self.held = {key: candidates[key] for key in plan.held}
        self.counts["applied"] += len(plan.applied)
        self.counts["duplicates"] += len(plan.duplicates)
        self.counts["unknown_types"] += plan.unknown_types
        return Folded(plan, render_plan(plan), set(orders))

    async def write(self, conn: asyncpg.Connection, folded: Folded, bulk: bool) -> None:
        """Write a folded window into the schema through `conn`, in the caller's transaction."""
        if bulk:
            await copy_plan(conn, folded.plan, folded.rows, folded.stored, self.schema)
        else:
            await write_plan(conn, folded.plan, folded.rows, self.schema)
