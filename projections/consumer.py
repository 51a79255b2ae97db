"""One stream of the consumer group, projected until stopped: the orchestration of the pieces.

reader.py hands out entries (own pending first, then new; reclaimed from dead consumers),
entries.py validates them, gaps.py holds events that wait for their predecessor, writer.py
applies a batch in one transaction (two batches in flight, pipeline.py), settle.py writes dead
letters, acknowledges and announces, failures.py says which failures are retried.

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

import asyncpg
import redis.asyncio as redis
import redis.exceptions

from projections import metrics
from projections.entries import Batch, as_text, decode_entries
from projections.failures import TRANSIENT, refused, transient
from projections.fold import Plan
from projections.gaps import Gaps, Held
from projections.ledger import DeadLetters
from projections.pipeline import Turn
from projections.progress import Progress
from projections.reader import Options, Reader
from projections.settle import Settler
from projections.writer import apply_batch

log = logging.getLogger("orderview.consumer")

# A dead letter leased by a consumer that died before publishing it is taken over after this long
# by another consumer (at once by a consumer restarted under the same name).
MIN_LEASE_SECONDS = 30.0


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
        self.reader = Reader(client, stream, options)
        self.progress = Progress(stream, options.consumer)
        self.settler = Settler(client, pool, stream, options.group)

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
            # Counted once committed, before the acknowledgement: a caller that sees the entries
            # acknowledged sees them counted.
            self._count(plan, dead, leased[0])
            await self.settler.settle(plan, dead, leased, raws)
        finally:
            self.gaps.release(retried)
        self.progress.applied([candidates[e].at for e in plan.applied])
        still_held = [e for e in plan.held if e not in dead]
        self.gaps.update(retried, {e: Held(candidates[e], raws[e], now) for e in still_held})
        metrics.GAPS_HELD.labels(self.stream).set(len(self.gaps.held))
        return plan

    def _count(self, plan: Plan, dead: dict[bytes, str], publish: set[bytes]) -> None:
        s = self.stream
        metrics.EVENTS_APPLIED.labels(s).inc(len(plan.applied))
        metrics.DUPLICATES.labels(s).inc(len(plan.duplicates))
        metrics.UNKNOWN_TYPES.labels(s).inc(plan.unknown_types)
        for entry_id in publish:
            error = dead[entry_id]
            metrics.DEAD_LETTERS.labels(s, "gap" if error.startswith("gap:") else "invalid").inc()
            log.warning(
                "dead-lettered", extra={"stream": s, "entry_id": as_text(entry_id), "error": error}
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

        Normally two batches are in flight (see pipeline.Turn). After a failure, the batches it
        left unapplied are applied one at a time (a refused one event by event), then the
        pipeline starts again."""
        backoff = 0.1
        backlog: deque[Batch] = deque()
        while not stopping.is_set() or backlog:
            try:
                await self.reader.ensure_group()
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
                    self.reader.group_lost()
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
                self.reader.dispatched(batch.ids())
                if len(flights) == 2:
                    await self._land(flights)
            while flights:
                await self._land(flights)
        except BaseException as exc:
            outcomes = await asyncio.gather(*(f.task for f in flights), return_exceptions=True)
            backlog.extend(f.batch for f, o in zip(flights, outcomes, strict=True) if o is not None)
            self.reader.grounded()
            if refused(exc) and any(o is exc for o in outcomes):
                return  # a batch failed on its content: _apply_alone tries it again, then singly
            raise

    async def _land(self, flights: deque[Flight]) -> None:
        """Wait for the oldest batch in flight; it leaves `flights` only once applied."""
        await flights[0].task
        self.reader.landed(flights.popleft().batch.ids())
        await self.reader.update_lag()

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
        await self.reader.update_lag()

    async def _next_batch(self, stopping: asyncio.Event) -> Batch | None:
        """Reclaimed or newly read entries (plus a retry of held gaps), or None when stopping."""
        await self.reader.touch(self.gaps.held)
        await self.progress.beat(self.pool)
        entries, deleted = await self.reader.reclaim(self.gaps.held)
        if deleted:  # pending entries whose stream entry was deleted: nothing to apply
            await self.settler.forget(deleted)
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
        return await self.reader.read(self.gaps.held)
