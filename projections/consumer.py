"""One stream of the consumer group: read, validate, apply, dead-letter, acknowledge, reclaim.

Every command goes to this stream's own keys (the stream and `<stream>:dlq`), so shards may live
on different nodes of a Redis Cluster. Put the stream name in a hash tag (`{orders:events:0}`) to
keep a stream and its dead-letter stream on one node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as redis
import redis.exceptions

from projections import metrics
from projections.entries import Batch, decode_entries
from projections.failures import TRANSIENT, refused, transient
from projections.fold import Plan
from projections.gaps import RETRY_MS, Gaps, Held
from projections.ledger import DeadLetters
from projections.pipeline import Turn
from projections.progress import Progress
from projections.settle import Settler
from projections.writer import apply_batch

log = logging.getLogger("orderview.consumer")

# A dead letter leased by a consumer that died before publishing it is taken over after this long
# by another consumer (at once by a consumer restarted under the same name).
MIN_LEASE_SECONDS = 30.0


@dataclass
class Options:
    """How one consumer reads; see Settings for the variables behind each."""

    group: str
    consumer: str
    batch_size: int = 1000
    block_ms: int = 1000
    gap_timeout: float = 30.0
    claim_idle_ms: int = 60_000


@dataclass
class Flight:
    """A batch being applied in the pipeline."""

    batch: Batch
    turn: Turn
    task: asyncio.Task


class StreamConsumer:
    """Projects one stream through the consumer group until stopped."""

    def __init__(self, client: redis.Redis, pool: asyncpg.Pool, stream: str, options: Options):
        self.redis = client
        self.pool = pool
        self.stream = stream
        self.options = options
        self.gaps = Gaps(options.gap_timeout)
        # Own pending entries first (after a restart), after the last one read, then new ones.
        self._read_from = b"0"
        self._claim_cursor = b"0-0"
        self._next_claim = 0.0
        self._next_touch = 0.0
        self._next_lag = 0.0
        self._in_flight: set[bytes] = set()  # entries of the batches in flight
        self._group_ready = False
        self.progress = Progress(stream, options.consumer)
        self.settler = Settler(client, pool, stream, options.group)

    # ---- Redis -------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group at the start of the stream (and the stream) unless it exists."""
        try:
            await self.redis.xgroup_create(self.stream, self.options.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """The next entries for this consumer: its own pending ones first, then new ones."""
        o = self.options
        # Held gaps are retried at least every RETRY_MS, so block no longer than that then.
        block = min(o.block_ms, RETRY_MS) if self.gaps.held else o.block_ms
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
        return [e for e in entries if e[0] not in self.gaps.held and e[0] not in self._in_flight]

    async def reclaim(self) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        """Entries idle too long on another (dead) consumer, now ours."""
        now = time.monotonic()
        if now < self._next_claim:
            return []
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
        if deleted:  # pending entries whose stream entry was deleted: nothing to apply
            await self.settler.forget(deleted)
        claimed = [c for c in claimed if c[0] not in self.gaps.held and c[0] not in self._in_flight]
        if self._claim_cursor in (b"0-0", "0-0"):
            self._next_claim = now + o.claim_idle_ms / 2000
        if claimed:
            metrics.RECLAIMED.labels(self.stream).inc(len(claimed))
            log.info("reclaimed idle entries", extra={"stream": self.stream, "count": len(claimed)})
        return claimed

    async def touch_held(self) -> None:
        """Keep held gaps ours: reset their idle time so no other consumer reclaims them."""
        now = time.monotonic()
        if not self.gaps.held or now < self._next_touch:
            return
        self._next_touch = now + self.options.claim_idle_ms / 3000
        o = self.options
        await self.redis.xclaim(
            self.stream, o.group, o.consumer, 0, list(self.gaps.held), justid=True
        )

    async def update_lag(self) -> None:
        """Refresh the lag and pending gauges from XINFO GROUPS (every few seconds)."""
        now = time.monotonic()
        if now < self._next_lag:
            return
        self._next_lag = now + 5
        for group in await self.redis.xinfo_groups(self.stream):
            if _text(group.get("name")) == self.options.group:
                metrics.LAG.labels(self.stream).set(group.get("lag") or 0)
                metrics.PENDING.labels(self.stream).set(group.get("pending") or 0)

    # ---- one batch ---------------------------------------------------------------------

    async def process(self, batch: Batch, turn: Turn | None = None) -> Plan:
        """Apply a batch plus the held gaps; settle poison, expired gaps and applied entries."""
        now = time.monotonic()
        candidates = dict(batch.events)
        raws = {**batch.raws, **{k: raw for k, (raw, _) in batch.poison.items()}}
        retried = self.gaps.retry(batch, now)
        for entry_id in retried:
            candidates.setdefault(entry_id, self.gaps.held[entry_id].event)
            raws.setdefault(entry_id, self.gaps.held[entry_id].raw)

        def choose(plan: Plan) -> dict[bytes, str]:
            dead = {k: error for k, (_, error) in batch.poison.items()}
            return dead | self.gaps.expired(plan.held, candidates, now)

        lease = max(self.options.claim_idle_ms / 1000, MIN_LEASE_SECONDS)
        spec = DeadLetters(self.stream, self.options.consumer, lease, choose, raws)
        try:
            plan, dead, leased = await apply_batch(
                self.pool, list(candidates.items()), spec, turn=turn
            )
            await self.settler.settle(plan, dead, leased, raws)
        finally:
            self.gaps.release(retried)
        self.progress.applied([candidates[e].at for e in plan.applied])
        still_held = [e for e in plan.held if e not in dead]
        self.gaps.update(retried, {e: Held(candidates[e], raws[e], now) for e in still_held})
        self._count(plan, dead, leased[0])
        return plan

    def _count(self, plan: Plan, dead: dict[bytes, str], publish: set[bytes]) -> None:
        s = self.stream
        metrics.EVENTS_APPLIED.labels(s).inc(len(plan.applied))
        metrics.DUPLICATES.labels(s).inc(len(plan.duplicates))
        metrics.UNKNOWN_TYPES.labels(s).inc(plan.unknown_types)
        metrics.GAPS_HELD.labels(s).set(len(self.gaps.held))
        for entry_id in publish:
            error = dead[entry_id]
            metrics.DEAD_LETTERS.labels(s, "gap" if error.startswith("gap:") else "invalid").inc()
            log.warning(
                "dead-lettered", extra={"stream": s, "entry_id": _text(entry_id), "error": error}
            )

    async def process_singly(self, batch: Batch) -> None:
        """Fallback after a refused batch (see `refused`): one event a transaction; an event that
        fails alone is dead-lettered."""
        for entry_id, event in sorted(batch.events.items(), key=lambda kv: kv[1].seq):
            single = Batch({entry_id: event}, {entry_id: batch.raws[entry_id]})
            try:
                await self.process(single)
            except Exception as exc:
                if not refused(exc):
                    raise
                if isinstance(exc, asyncpg.PostgresError):
                    reason = f"refused by database: {exc}"
                else:  # a defect: the event passed validation but could not be folded or rendered
                    log.exception("event could not be applied", extra={"entry_id": entry_id})
                    reason = f"could not be applied: {exc!r}"
                await self.process(Batch(poison={entry_id: (batch.raws[entry_id], reason)}))
        if batch.poison:
            await self.process(Batch(poison=batch.poison))

    # ---- the loop ----------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Read and apply batches until `stopping` is set; the batches in hand are always finished.

        Normally two batches are in flight (see pipeline.Turn). After a failure, the batches it left
        unapplied are applied one at a time (a refused one event by event), then the pipeline
        starts again."""
        backoff = 0.1
        backlog: deque[Batch] = deque()
        while not stopping.is_set() or backlog:
            try:
                if not self._group_ready:
                    await self.ensure_group()
                    self._group_ready = True
                if backlog:
                    await self._apply_alone(backlog[0])
                    backlog.popleft()
                else:
                    await self._pipeline(stopping, backlog)
                backoff = 0.1
            except Exception as exc:
                if isinstance(exc, redis.exceptions.ResponseError) and "NOGROUP" in str(exc):
                    # The group vanished (a Redis restarted without persistence): create it again.
                    log.warning("consumer group missing, recreating", extra={"stream": self.stream})
                    self._group_ready = False
                    continue
                if not transient(exc):  # CLUSTERDOWN is a ResponseError, and transient
                    raise
                log.warning(
                    "connection lost, retrying",
                    extra={"stream": self.stream, "error": repr(exc), "retry_in": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        try:
            await self.progress.stopped(self.pool)
        except TRANSIENT as exc:  # status sees it gone when its heartbeat is stale instead
            log.warning("stop not recorded", extra={"stream": self.stream, "error": repr(exc)})

    async def _pipeline(self, stopping: asyncio.Event, backlog: deque[Batch]) -> None:
        """Read batch k+1 and fold it while batch k is written, until stopping or a failure.
        On a failure, the batches in flight that were not applied go to `backlog`, in order."""
        flights: deque[Flight] = deque()
        try:
            while not stopping.is_set():
                batch = await self._next_batch(stopping)
                if batch is None:
                    while flights:
                        await self._land(flights)
                    continue
                turn = Turn(flights[-1].turn if flights else None)
                flights.append(Flight(batch, turn, asyncio.create_task(self._timed(batch, turn))))
                self._in_flight |= batch.ids()
                if len(flights) == 2:
                    await self._land(flights)
            while flights:
                await self._land(flights)
        except BaseException as exc:
            outcomes = await asyncio.gather(*(f.task for f in flights), return_exceptions=True)
            backlog.extend(f.batch for f, o in zip(flights, outcomes, strict=True) if o is not None)
            self._in_flight.clear()
            if refused(exc) and any(o is exc for o in outcomes):
                return  # a batch failed on its content: _apply_alone tries it again, then singly
            raise

    async def _land(self, flights: deque[Flight]) -> None:
        """Wait for the oldest batch in flight; it leaves `flights` only once applied."""
        await flights[0].task
        self._in_flight -= flights.popleft().batch.ids()
        await self.update_lag()

    async def _timed(self, batch: Batch, turn: Turn | None = None) -> None:
        started = time.perf_counter()
        await self.process(batch, turn)
        metrics.BATCH_SECONDS.labels(self.stream).observe(time.perf_counter() - started)

    async def _apply_alone(self, batch: Batch) -> None:
        """Apply a batch outside the pipeline; a batch PostgreSQL refuses, event by event."""
        try:
            await self._timed(batch)
        except Exception as exc:
            if not refused(exc):
                raise
            log.warning("batch refused, applying one by one", extra={"error": repr(exc)})
            await self.process_singly(batch)
        await self.update_lag()

    async def _next_batch(self, stopping: asyncio.Event) -> Batch | None:
        """Reclaimed or newly read entries (plus a retry of held gaps), or None when stopping."""
        await self.touch_held()
        await self.progress.beat(self.pool)
        entries = await self.reclaim()
        if not entries:
            entries = await self._read_unless_stopped(stopping)
        if entries is None:
            return None
        if not entries and not self.gaps.held:
            return None
        return decode_entries(entries)

    async def _read_unless_stopped(self, stopping: asyncio.Event):
        """The next entries, or None when stopping. A read in flight is never cancelled: the
        server may have delivered entries already, which would then stay pending unapplied until
        a restart, so a stop waits for it (at most ORDERVIEW_BLOCK_MS) and applies what it got."""
        if stopping.is_set():
            return None
        return await self.read()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
