"""Settling a batch after its commit: its dead letters written to `<stream>:dlq`, its entries
acknowledged, the acknowledgement announced. The one place the projector acknowledges entries.

The order is fixed: the batch commits in PostgreSQL (its cache-invalidation NOTIFY inside that
transaction), then one pipeline writes the dead letters (XADD) and acknowledges (XACK), then a
separate PUBLISH announces it (announce.py). The PUBLISH must never join the pipeline: a Redis
Cluster client refuses PUBLISH in a pipeline (a channel has no slot), so nothing would be
acknowledged on a cluster. Every other command names this stream's own keys (the stream and
`<stream>:dlq`): hash-tag the stream name to keep both on one node. An API process lets a request
naming a position use its document cache on the strength of this order (services/api/barrier.py):
an entry acknowledged has had its invalidation committed.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import asyncpg
import redis.asyncio as redis

from projections.announce import applied_channel
from projections.fold import Plan
from projections.ledger import mark_published


def dlq_key(stream: str) -> str:
    """The dead-letter stream of a stream."""
    return f"{stream}:dlq"


@dataclass
class Settler:
    """Settles the batches of one stream for one consumer group."""

    redis: redis.Redis
    pool: asyncpg.Pool
    stream: str
    group: str

    async def settle(
        self,
        plan: Plan,
        dead: dict[bytes, str],
        leased: tuple[set[bytes], set[bytes]],
        raws: dict[bytes, bytes],
    ) -> None:
        """Write the dead letters this consumer leased and acknowledge, in one pipeline, after
        the commit. Dead letters leased by another live consumer stay pending: it acks them."""
        publish, published = leased
        done = [*plan.applied, *plan.duplicates, *publish, *published]
        if not done:
            return
        pipe = self.redis.pipeline(transaction=False)
        order = sorted(publish)
        for entry_id in order:
            fields = {"event": raws[entry_id], "error": _dlq_error(dead[entry_id])}
            pipe.xadd(dlq_key(self.stream), {**fields, "stream": self.stream, "entry_id": entry_id})
        pipe.xack(self.stream, self.group, *done)
        replies = await pipe.execute()
        # After the XACK, for X-Min-Position waiters. Not in the pipeline: a Redis Cluster client
        # refuses PUBLISH there (a channel has no slot); a plain PUBLISH reaches every node.
        await self.redis.publish(applied_channel(self.stream), b"")
        if publish:
            await mark_published(self.pool, self.stream, dict(zip(order, replies, strict=False)))

    async def forget(self, deleted: Collection[bytes]) -> None:
        """Acknowledge pending entries whose stream entry was deleted: nothing to apply."""
        await self.redis.xack(self.stream, self.group, *deleted)


def _dlq_error(error: str) -> str:
    """The `error` of a dead letter: exactly `gap` for a gap (events.md), the reason otherwise.
    The gap's details stay in the log and in the dead-letter ledger."""
    return "gap" if error.startswith("gap:") else error
