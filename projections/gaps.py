"""Gap holding: an event whose predecessor has not been applied waits, in memory, for it.

A held event is tried again with every batch that touches its aggregate, and all of them every
RETRY_MS (another consumer may have applied the predecessor meanwhile). One held for the gap
timeout is dead-lettered with the reason `gap`.
"""

from __future__ import annotations

from dataclasses import dataclass

from projections.entries import Batch
from projections.events import Event

RETRY_MS = 200


@dataclass
class Held:
    """An event waiting for its predecessor."""

    event: Event
    raw: bytes
    since: float


class Gaps:
    """The events one consumer holds, by entry id, and which of them a batch in flight retries."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.held: dict[bytes, Held] = {}
        self._next_retry = 0.0
        self._retrying: set[bytes] = set()  # held entries a batch in flight is retrying

    def retry(self, batch: Batch, now: float) -> set[bytes]:
        """The held entries to try again with `batch`, taken until `release`d: all of them every
        RETRY_MS, else those whose aggregate the batch touches; none a batch in flight retries."""
        if now >= self._next_retry:
            self._next_retry = now + RETRY_MS / 1000
            retried = set(self.held) - self._retrying
        else:
            touched = {e.aggregate for e in batch.events.values()}
            held = self.held.items()
            retried = {
                k for k, h in held if h.event.aggregate in touched and k not in self._retrying
            }
        self._retrying |= retried
        return retried

    def release(self, retried: set[bytes]) -> None:
        """The batch that retried these entries is done with them (applied or failed)."""
        self._retrying -= retried

    def expired(
        self, held: list[bytes], events: dict[bytes, Event], now: float
    ) -> dict[bytes, str]:
        """Of the entries a plan holds, those held for the timeout: {entry id: gap reason}."""
        dead = {}
        for entry_id in held:
            since = self.held[entry_id].since if entry_id in self.held else now
            if now - since >= self.timeout:
                dead[entry_id] = _gap_reason(events[entry_id], self.timeout)
        return dead

    def update(self, retried: set[bytes], held: dict[bytes, Held]) -> None:
        """After a batch: the retried entries it no longer holds go, those it holds anew (`held`:
        all it still holds) are kept; a retried entry still held keeps its time."""
        for entry_id in retried - held.keys():
            self.held.pop(entry_id, None)
        for entry_id in held.keys() - retried:
            self.held[entry_id] = held[entry_id]


def _gap_reason(event: Event, timeout: float) -> str:
    return (
        f"gap: {event.kind} {event.aggregate_id} of tenant {event.tenant} got seq {event.seq} "
        f"but its predecessor was not applied within {timeout:g}s"
    )
