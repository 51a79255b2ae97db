"""A rebuild's fold: entries applied to a rebuild's schema with the live projector's decisions.

The same validation (entries.decode_entries), fold (fold.plan_batch), rendering and writer as the
live projector, so the result is the same: duplicates by seq, unknown types advance seq, poison is
skipped, a gap waits (across windows) for its predecessor. An entry the live projector
dead-lettered (ledger.dead_lettered) is dead here too, at once, and no dead letter is written again:
poison and gaps in entries the live group has not settled yet are left to the live projector.

Bulk windows (`fold_window`) keep the orders they touch in memory, up to `resident` of them, the
least recently touched going out first: an order is rendered and written when it goes out (or at
`flush`), not once per window it has events in. With the realistic history (4 000 open orders)
that renders and writes each order about once, by COPY, and reads none back.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from projections.entries import decode_entries
from projections.events import Event
from projections.fold import OrderState, Plan, plan_batch
from projections.ledger import dead_lettered
from projections.writer import Rows, copy_plan, load_states, render_plan, write_plan

# An entry's key: (stream, entry id) for a stream entry, (None, line number) for a file line.
Key = tuple[str | None, Any]

RESIDENT = 20_000  # orders a bulk replay keeps in memory (about 2 kB each)


@dataclass
class Folded:
    """States to write, rendered, and which of their orders the schema has a row of already (or
    will have, from the write before), so that only the others go in by COPY."""

    plan: Plan
    rows: Rows
    stored: set[tuple[str, int]]


class Replay:
    """Folds windows of entries into the tables of `schema` through one connection."""

    def __init__(self, conn: asyncpg.Connection, schema: str, resident: int = RESIDENT):
        self.conn = conn
        self.schema = schema
        self.held: dict[Key, Event] = {}
        self.counts: Counter[str] = Counter()
        self.limit = resident
        # Orders in memory, least recently touched first, and those of them the schema has.
        self.resident: OrderedDict[tuple[str, int], OrderState] = OrderedDict()
        self.stored: set[tuple[str, int]] = set()

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
        candidates = await self._candidates(stream, entries)
        orders, participants = await load_states(self.conn, candidates.values(), self.schema, base)
        plan = self._plan(candidates, orders, participants)
        return Folded(plan, render_plan(plan), set(orders))

    async def fold_window(
        self,
        stream: str | None,
        entries: list[tuple[Any, dict[bytes, bytes]]],
        base: Plan | None = None,
    ) -> Folded:
        """Like `fold`, keeping the window's orders in memory: what it returns to write is the
        window's participants and the orders that went out of memory to make room."""
        candidates = await self._candidates(stream, entries)
        resident = self.resident
        absent = [
            e
            for e in candidates.values()
            if e.kind != "order" or (e.tenant, e.aggregate_id) not in resident
        ]
        orders, participants = await load_states(self.conn, absent, self.schema, base)
        for event in absent:  # `base` brought every order it writes: take those asked for
            key = (event.tenant, event.aggregate_id)
            if event.kind == "order" and key in orders:
                self.resident[key] = orders[key]
                self.stored.add(key)
        plan = self._plan(candidates, self.resident, participants)
        for key, state in plan.orders.items():
            self.resident[key] = state
            self.resident.move_to_end(key)
        out = self._take(len(self.resident) - self.limit)
        return self._folded(Plan(orders=out, participants=plan.participants))

    def flush(self, size: int) -> Iterator[Folded]:
        """The orders in memory, `size` at a time, to write at the end of a bulk replay."""
        while self.resident:
            yield self._folded(Plan(orders=self._take(size)))

    async def write(self, conn: asyncpg.Connection, folded: Folded, bulk: bool) -> None:
        """Write a folded window into the schema through `conn`, in the caller's transaction."""
        if bulk:
            await copy_plan(conn, folded.plan, folded.rows, folded.stored, self.schema)
        else:
            await write_plan(conn, folded.plan, folded.rows, self.schema)

    async def _candidates(
        self, stream: str | None, entries: list[tuple[Any, dict[bytes, bytes]]]
    ) -> dict[Key, Event]:
        """The entries' valid events and the held gaps, less those the ledger has as dead."""
        batch = decode_entries(entries)
        self.counts["poison"] += len(batch.poison)
        candidates: dict[Key, Event] = {(stream, k): e for k, e in batch.events.items()}
        candidates.update(self.held)
        for key in await dead_lettered(self.conn, candidates):
            candidates.pop(key)
            self.held.pop(key, None)
            self.counts["dead"] += 1
        return candidates

    def _plan(self, candidates: dict[Key, Event], orders: dict, participants: dict) -> Plan:
        plan = plan_batch(list(candidates.items()), orders, participants)
        self.held = {key: candidates[key] for key in plan.held}
        self.counts["applied"] += len(plan.applied)
        self.counts["duplicates"] += len(plan.duplicates)
        self.counts["unknown_types"] += plan.unknown_types
        return plan

    def _take(self, count: int) -> dict[tuple[str, int], OrderState]:
        """The `count` least recently touched orders, out of memory."""
        count = min(count, len(self.resident))
        return dict(self.resident.popitem(last=False) for _ in range(count))

    def _folded(self, plan: Plan) -> Folded:
        stored = self.stored.intersection(plan.orders)
        self.stored -= stored
        return Folded(plan, render_plan(plan), stored)
