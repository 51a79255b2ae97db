"""Reading one stream through the consumer group, for one consumer.

This consumer's own pending entries first (after a restart, each read after the last one read),
then new ones (XREADGROUP); entries idle too long on a dead consumer (XAUTOCLAIM); held gaps kept
ours (XCLAIM); the lag gauges (XINFO GROUPS). An entry already in hand, held or in a batch in
flight, is never handed out again. Acknowledging is settle.py's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass

import redis.asyncio as redis
import redis.exceptions

from projections import metrics
from projections.entries import as_text
from projections.gaps import RETRY_MS

log = logging.getLogger("orderview.consumer")

Entries = list[tuple[bytes, dict[bytes, bytes] | None]]


@dataclass
class Options:
    """How one consumer reads; see Settings for the variables behind each."""

    group: str
    consumer: str
    batch_size: int = 1000
    block_ms: int = 1000
    gap_timeout: float = 30.0
    claim_idle_ms: int = 60_000


class Reader:
    """Hands out the entries of one stream that this consumer is to apply."""

    def __init__(self, client: redis.Redis, stream: str, options: Options):
        self.redis = client
        self.stream = stream
        self.options = options
        self.in_flight: set[bytes] = set()  # entries of the batches in flight
        # Own pending entries first (after a restart), after the last one read, then new ones.
        self._read_from = b"0"
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self._next_touch = 0.0
        self._next_lag = 0.0
        self._group_ready = False

    async def ensure_group(self) -> None:
        """Create the group at the start of the stream (and the stream) unless it exists."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.options.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def group_lost(self) -> None:
        """The group vanished (a Redis restarted without persistence): create it again."""
        self._group_ready = False

    async def read(self, held: Collection[bytes]) -> Entries:
        """The next entries for this consumer: its own pending ones first, then new ones."""
        o = self.options
        # Held gaps are retried at least every RETRY_MS, so block no longer than that then.
        block = min(o.block_ms, RETRY_MS) if held else o.block_ms
        try:
            reply = await self.redis.xreadgroup(
                o.group,
                o.consumer,
                {self.stream: self._read_from},
                count=o.batch_size,
                block=block if self._read_from == b">" else None,
            )
        except redis.exceptions.ResponseError as exc:
            if not str(exc).startswith("UNBLOCKED"):
                raise
            # Our read was blocked on a master that a failover turned into a replica: nothing was
            # delivered; the next read follows the slot to its new master.
            return []
        entries = reply[0][1] if reply else []
        if self._read_from != b">":
            if not entries:
                self._read_from = b">"
                return []
            self._read_from = entries[-1][0]
        return [e for e in entries if e[0] not in held and e[0] not in self.in_flight]

    async def reclaim(self, held: Collection[bytes]) -> tuple[Entries, list[bytes]]:
        """Entries idle too long on another (dead) consumer, now ours; and the pending entries
        whose stream entry was deleted (nothing to apply: the caller acknowledges them)."""
        now = time.monotonic()
        if now < self._next_claim:
            return [], []
        o = self.options
        reply = await self.redis.xautoclaim(
            self.stream,
            o.group,
            o.consumer,
            o.claim_idle_ms,
            self._claim_cursor,
            count=o.batch_size,
        )
        self._claim_cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        claimed = [c for c in claimed if c[0] not in held and c[0] not in self.in_flight]
        if self._claim_cursor in (b"0-0", "0-0"):
            self._next_claim = now + o.claim_idle_ms / 2000
        if claimed:
            metrics.RECLAIMED.labels(self.stream).inc(len(claimed))
            log.info("reclaimed idle entries", extra={"stream": self.stream, "count": len(claimed)})
        return claimed, deleted

    async def touch(self, held: Collection[bytes]) -> None:
        """Keep held gaps ours: reset their idle time so no other consumer reclaims them."""
        now = time.monotonic()
        if not held or now < self._next_touch:
            return
        self._next_touch = now + self.options.claim_idle_ms / 3000
        o = self.options
        await self.redis.xclaim(self.stream, o.group, o.consumer, 0, list(held), justid=True)

    async def update_lag(self) -> None:
        """Refresh the lag and pending gauges from XINFO GROUPS (every few seconds)."""
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + 5
        for group in await self.redis.xinfo_groups(self.stream):
            if as_text(group.get("name")) == self.options.group:
                metrics.LAG.labels(self.stream).set(group.get("lag") or 0)
                metrics.PENDING.labels(self.stream).set(group.get("pending") or 0)

    def dispatched(self, ids: set[bytes]) -> None:
        """These entries are in a batch in flight: not handed out again until they land."""
        self.in_flight |= ids

    def landed(self, ids: set[bytes]) -> None:
        """These entries' batch is applied and settled."""
        self.in_flight -= ids

    def grounded(self) -> None:
        """No batch is in flight any more (after a failure: the unapplied ones are in hand)."""
        self.in_flight.clear()
