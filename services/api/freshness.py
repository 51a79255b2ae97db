"""Read your writes: a request's `X-Min-Position` waits until its entries are settled and visible.

An entry is settled when the consumer group has acknowledged it, which the projector does only
after the PostgreSQL commit of its effect (applied, a duplicate or dead-lettered). For a stream,
"settled through W" holds when the group's last-delivered id is >= W and no pending entry is <= W;
XINFO GROUPS and the XPENDING summary, read in that order, give both: W = min(last delivered,
smallest pending id - 1). A gap held for its predecessor stays pending, so it holds W back until
it is applied or dead-lettered.

Each API process keeps one subscription to the projector's announcements (`projections.announce`,
one PUBLISH after each XACK) and recomputes a stream's W when one arrives, never per request, so a
request whose positions are already covered answers with no round trip, and a request without the
header pays nothing. Waiters sleep on an event set whenever a watermark moves. Watermarks only
move forward. On every (re)subscription each stream is recomputed, so announcements missed while
the connection was down cost nothing but that recomputation.

With a replica (`replica.Replica`), a W is visible only once the replica has replayed the primary
WAL position read after W was computed; see replica.py for why that last step is a short check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from typing import NamedTuple

import redis.asyncio as redis
from prometheus_client import Counter

from projections.announce import applied_channel
from services.api.positions import EntryId, Positions, header_value, parse, parse_entry_id
from services.api.replica import Replica

log = logging.getLogger("orderview.api")

REPLICA_CHECK_SECONDS = 0.005  # between replay checks, only while a request waits on the replica
RETRY_SECONDS = 0.5  # after Redis or the primary failed to answer a recomputation
MAX_CHECKPOINTS = 64  # per stream; dropping the oldest only makes a wait more conservative
NOTHING: EntryId = (0, 0)  # nothing settled (XADD never returns 0-0)

WAITS = Counter(
    "orderview_api_position_waits_total",
    "Requests whose X-Min-Position was not yet covered when they arrived, by outcome",
    ["outcome"],
)


class Demand(NamedTuple):
    """What a request's `X-Min-Position` asks, once covered: the positions, and the seconds left of
    ORDERVIEW_MIN_POSITION_WAIT_MS (for the document cache's barrier, barrier.py)."""

    positions: Positions
    seconds_left: float


class PositionNotReached(Exception):
    """The positions were not settled and visible within ORDERVIEW_MIN_POSITION_WAIT_MS: 503."""


class Freshness:
    """One per API process: watermarks by stream, the subscription feeding them, the waiters."""

    def __init__(
        self,
        client: redis.Redis | None,
        streams: Iterable[str],
        group: str,
        wait_seconds: float,
        replica: Replica | None = None,
        subscriber: redis.Redis | None = None,
    ) -> None:
        self._client, self._group, self._wait = client, group, wait_seconds
        # The connection the announcements arrive on: `client` itself, or on a Redis Cluster one
        # node's plain connection (a plain PUBLISH reaches every node of a cluster).
        self._subscriber = subscriber if subscriber is not None else client
        self._replica = replica
        self.streams = tuple(streams)
        self._channels = {applied_channel(s).encode(): s for s in self.streams}
        self._settled: dict[str, EntryId] = dict.fromkeys(self.streams, NOTHING)
        self._visible: dict[str, EntryId] = dict.fromkeys(self.streams, NOTHING)
        self._checkpoints = {
            s: deque[tuple[EntryId, int]](maxlen=MAX_CHECKPOINTS) for s in self.streams
        }
        self._replayed: float = 0
        self._moved = asyncio.Event()
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._waiting = 0
        self._replica_task: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []

    # ---- requests ------------------------------------------------------------------------------

    async def require(self, headers: Iterable[tuple[bytes, bytes]]) -> Demand | None:
        """The freshness step of a request, after its access checks: nothing without the header;
        with it, InvalidParameter when malformed, else wait (PositionNotReached when too long)."""
        raw = header_value(headers)
        if raw is None:
            return None
        positions = parse(raw, self.streams)
        if self.covered(positions):
            return Demand(positions, self._wait)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.wait(positions)
        return Demand(positions, max(0.0, self._wait - (loop.time() - started)))

    def visible(self) -> Positions:
        """Every stream's watermark as this process's reads see it (a copy)."""
        return dict(self._visible)

    def covered(self, positions: Positions) -> bool:
        """Whether every position is settled and visible to this process's reads."""
        visible = self._visible
        return all(entry <= visible[stream] for stream, entry in positions.items())

    async def wait(self, positions: Positions) -> None:
        """Return once `positions` are covered; PositionNotReached after the configured wait."""
        if self.covered(positions):
            return
        if self._client is None:  # no Redis configured: nothing can ever be known settled
            raise PositionNotReached
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait):
                while not self.covered(positions):
                    moved = self._moved
                    self._watch_replica(positions)
                    await moved.wait()
        except TimeoutError:
            WAITS.labels("timeout").inc()
            raise PositionNotReached from None
        finally:
            self._waiting -= 1
        WAITS.labels("reached").inc()

    def _move(self) -> None:
        """Wake every waiter (each checks its own positions again)."""
        self._moved.set()
        self._moved = asyncio.Event()

    # ---- watermarks ----------------------------------------------------------------------------

    def settle(self, stream: str, entry: EntryId, lsn: int | None) -> None:
        """Stream `stream` is settled through `entry`; with a replica, once it replays to `lsn`."""
        if entry <= self._settled[stream]:
            return
        self._settled[stream] = entry
        if lsn is None or lsn <= self._replayed:
            self._visible[stream] = entry
            self._checkpoints[stream].clear()
        else:
            self._checkpoints[stream].append((entry, lsn))
        self._move()  # also when only settled: a waiter then starts the replica's replay check

    def replayed(self, lsn: float) -> None:
        """The replica has replayed the WAL up to `lsn`."""
        if lsn <= self._replayed:
            return
        self._replayed = lsn
        moved = False
        for stream, points in self._checkpoints.items():
            while points and points[0][1] <= lsn:
                self._visible[stream] = points.popleft()[0]
                moved = True
        if moved:
            self._move()

    async def compute(self, stream: str) -> None:
        """Read the group's settled watermark of `stream` (and the primary's LSN) and apply it."""
        assert self._client is not None
        pipe = self._client.pipeline(transaction=False)
        pipe.xinfo_groups(stream)
        pipe.xpending(stream, self._group)
        groups, pending = await pipe.execute(raise_on_error=False)
        entry = _watermark(groups, pending, self._group)
        if isinstance(entry, Exception):
            raise entry
        lsn = await self._replica.primary_lsn() if self._replica is not None else None
        self.settle(stream, entry, lsn)

    def _watch_replica(self, positions: Positions) -> None:
        """Start the replay check if a waiter's positions are settled but not yet visible."""
        if self._replica is None or (self._replica_task and not self._replica_task.done()):
            return
        settled = self._settled
        if all(entry <= settled[stream] for stream, entry in positions.items()):
            self._replica_task = asyncio.create_task(self._check_replica())

    async def _check_replica(self) -> None:
        assert self._replica is not None
        while self._waiting and any(self._checkpoints.values()):
            try:
                self.replayed(await self._replica.replayed_lsn())
                await asyncio.sleep(REPLICA_CHECK_SECONDS)
            except Exception as exc:  # a replica gone away: waiters time out, requests say 503
                log.warning("replica replay position unavailable", extra={"error": repr(exc)})
                await asyncio.sleep(RETRY_SECONDS)

    # ---- the subscription ----------------------------------------------------------------------

    def start(self) -> None:
        if self._client is not None and self.streams:
            self._tasks = [
                asyncio.create_task(self._listen()),
                asyncio.create_task(self._refresh()),
            ]

    async def close(self) -> None:
        tasks = [*self._tasks, *([self._replica_task] if self._replica_task else [])]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a subscription's connection must not hold the shutdown
            await asyncio.wait(tasks, timeout=2)

    def _mark(self, stream: str) -> None:
        self._dirty.add(stream)
        self._wake.set()

    async def _listen(self) -> None:
        """Keep one subscription to every stream's channel; each message marks its stream."""
        assert self._subscriber is not None
        while True:
            pubsub = self._subscriber.pubsub()
            try:
                await pubsub.subscribe(*self._channels)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    # A subscribe confirmation too: the first, or after redis-py reconnected.
                    if message is not None and message["channel"] in self._channels:
                        self._mark(self._channels[message["channel"]])
            except (redis.RedisError, OSError) as exc:
                log.warning("position announcements interrupted", extra={"error": repr(exc)})
                await asyncio.sleep(RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def _refresh(self) -> None:
        """Recompute the watermarks of the marked streams, coalescing announcements."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            streams, self._dirty = self._dirty, set()
            for stream in streams:
                try:
                    await self.compute(stream)
                except Exception as exc:  # Redis or the primary unreachable: try again soon
                    log.warning(
                        "position watermark unavailable",
                        extra={"stream": stream, "error": repr(exc)},
                    )
                    asyncio.get_running_loop().call_later(RETRY_SECONDS, self._mark, stream)


def _watermark(groups, pending, group: str) -> EntryId | Exception:
    """Settled-through id from XINFO GROUPS and the XPENDING summary (read in that order)."""
    if isinstance(groups, redis.ResponseError) or isinstance(pending, redis.ResponseError):
        return NOTHING  # no stream or no group yet: nothing is settled
    if isinstance(groups, Exception):
        return groups
    if isinstance(pending, Exception):
        return pending
    info = next((g for g in groups if _text(g.get("name")) == group), None)
    if info is None:
        return NOTHING
    delivered = parse_entry_id(_text(info.get("last-delivered-id"))) or NOTHING
    if pending and pending.get("pending"):
        smallest = parse_entry_id(_text(pending.get("min"))) or NOTHING
        return min(delivered, _minus_one(smallest))
    return delivered


def _minus_one(entry: EntryId) -> EntryId:
    """The greatest entry id below `entry`."""
    ms, seq = entry
    if seq:
        return ms, seq - 1
    return (ms - 1, 2**64 - 1) if ms else NOTHING


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
