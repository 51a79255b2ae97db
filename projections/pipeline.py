"""Two batches in flight per consumer: the Python work of the next batch (loading, folding,
rendering) overlaps PostgreSQL's work on the current one.

A `Turn` is a batch's place in that pipeline; `overlay` gives the next batch the states the batch
in flight is writing, not yet committed. A rebuild folds each window on the one being written
with the same `overlay`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from projections.fold import Plan


class Superseded(Exception):
    """The batch before this one in the pipeline failed, so this one, folded on it, rolls back."""


class Turn:
    """A batch's place in one consumer's pipeline of two batches in flight.

    Batch k is loaded, folded and rendered while batch k-1 is being written, on states that
    overlay k-1's plan on the stored ones (k-1 is not committed yet). k writes only once k-1 has
    issued all its statements, so k-1 never waits for a lock k holds (k waits for k-1's locks
    until it commits: no cycle), and k commits only after k-1 has committed: if k-1 fails, k
    rolls back (Superseded) and both are applied again, one by one.
    """

    def __init__(self, previous: Turn | None = None):
        loop = asyncio.get_running_loop()
        self.previous = previous
        self.planned: asyncio.Future[Plan] = loop.create_future()
        self.written = asyncio.Event()
        self.finished: asyncio.Future[bool] = loop.create_future()

    async def base(self) -> Plan | None:
        """The plan of the batch before, once it has one."""
        if self.previous is None:
            return None
        try:
            return await asyncio.shield(self.previous.planned)
        except Exception as exc:
            raise Superseded from exc

    async def may_write(self) -> None:
        if self.previous is not None:
            await self.previous.written.wait()

    async def may_commit(self) -> None:
        if self.previous is not None and not await asyncio.shield(self.previous.finished):
            raise Superseded

    def committed(self) -> None:
        self._settle(True)

    def failed(self) -> None:
        self._settle(False)

    def _settle(self, ok: bool) -> None:
        if not self.planned.done():
            self.planned.set_exception(Superseded())
            self.planned.exception()  # retrieved: no "never retrieved" warning
        self.written.set()
        if not self.finished.done():
            self.finished.set_result(ok)
        self.previous = None  # the chain of turns never grows past two


def overlay(
    stored: dict[tuple[str, int], Any], written: dict[tuple[str, int], Any]
) -> dict[tuple[str, int], Any]:
    """Stored states, replaced by those a batch in flight writes where those are further on."""
    for key, state in written.items():
        mine = stored.get(key)
        if mine is None or mine.seq < state.seq:
            stored[key] = state
    return stored
