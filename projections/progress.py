"""A stream consumer's heartbeat and progress in PostgreSQL, and the ledger counts it exports.

`orderview status` reads the heartbeat (is a consumer live?) and the progress (when was an event
last applied?) from here rather than from the read tables: no scan of a large table, and no extra
statement in a batch's transaction. Redis 7.0 resets a consumer's idle time only when a read
delivers entries, so idle time alone cannot tell a quiet live consumer from a dead one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from projections import metrics
from projections.tables import CONSUMERS, DEAD_LETTERS

HEARTBEAT_SECONDS = 5.0
LEDGER_SECONDS = 30.0

_BEAT = f"""
INSERT INTO {CONSUMERS} AS c (stream, consumer, applied_at, event_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (stream, consumer) DO UPDATE SET
    seen_at = now(), stopped_at = NULL,
    started_at = CASE WHEN $5 THEN now() ELSE c.started_at END,
    applied_at = greatest(c.applied_at, EXCLUDED.applied_at),
    event_at = greatest(c.event_at, EXCLUDED.event_at)
"""
_STOPPED = f"""
UPDATE {CONSUMERS} SET stopped_at = now(), seen_at = now(),
    applied_at = greatest(applied_at, $3), event_at = greatest(event_at, $4)
WHERE stream = $1 AND consumer = $2
"""
# Dead letters by state and reason; `published_at IS NULL` rows are leases being written.
LEDGER_COUNTS = f"""
SELECT reason,
       count(*) FILTER (WHERE replayed_at IS NULL AND dropped_at IS NULL) AS waiting,
       count(*) FILTER (WHERE replayed_at IS NOT NULL) AS replayed,
       count(*) FILTER (WHERE dropped_at IS NOT NULL) AS dropped
FROM {DEAD_LETTERS} WHERE stream = $1 AND published_at IS NOT NULL
GROUP BY reason
"""


@dataclass
class Progress:
    """What one stream consumer has committed since it started, reported with its heartbeat."""

    stream: str
    consumer: str
    applied_at: datetime | None = None
    event_at: datetime | None = None
    _started: bool = True
    _next_beat: float = 0.0
    _next_ledger: float = 0.0

    def applied(self, times: list[datetime]) -> None:
        """A batch that applied events with these `at` times has committed."""
        if times:
            self.applied_at = datetime.now(UTC)
            latest = max(times)
            self.event_at = latest if self.event_at is None else max(self.event_at, latest)

    async def beat(self, pool: asyncpg.Pool) -> None:
        """Every few seconds: the heartbeat row, and (less often) the ledger's metrics."""
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_SECONDS
            args = (self.stream, self.consumer, self.applied_at, self.event_at, self._started)
            await pool.execute(_BEAT, *args)
            self._started = False
        if now >= self._next_ledger:
            self._next_ledger = now + LEDGER_SECONDS
            await refresh_ledger_metrics(pool, self.stream)

    async def stopped(self, pool: asyncpg.Pool) -> None:
        """A clean stop: `orderview status` sees this consumer gone at once."""
        await pool.execute(_STOPPED, self.stream, self.consumer, self.applied_at, self.event_at)


async def refresh_ledger_metrics(pool: asyncpg.Pool, stream: str) -> None:
    """Set the dead-letter gauges and counters of a stream from the ledger."""
    rows = await pool.fetch(LEDGER_COUNTS, stream)
    metrics.LEDGER.update(
        stream, {r["reason"]: (r["waiting"], r["replayed"], r["dropped"]) for r in rows}
    )
