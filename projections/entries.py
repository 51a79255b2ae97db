"""Stream entries in hand: each one validated into an event, or poison with its reason.

The live projector and a rebuild decode entries here, so they take the same decisions on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from projections.events import Event, PoisonEvent, decode_event


@dataclass
class Batch:
    """Entries in hand: decoded events by entry id, and poison entries with their reasons."""

    events: dict[bytes, Event] = field(default_factory=dict)
    raws: dict[bytes, bytes] = field(default_factory=dict)
    poison: dict[bytes, tuple[bytes, str]] = field(default_factory=dict)

    def ids(self) -> set[bytes]:
        return {*self.events, *self.poison}


def decode_entries(entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> Batch:
    """Validate stream entries; poison ones keep their raw value and reason."""
    batch = Batch()
    for entry_id, fields in entries:
        raw = (fields or {}).get(b"event")
        try:
            batch.events[entry_id] = decode_event(raw)
            batch.raws[entry_id] = raw
        except PoisonEvent as exc:
            batch.poison[entry_id] = (raw if raw is not None else b"", str(exc))
    return batch


def as_text(value: Any) -> str:
    """An entry id, or a name in a Redis reply, as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
