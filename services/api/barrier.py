"""When the document cache may answer a request naming positions (`X-Min-Position`): barriers.

The question. A request's positions are settled (freshness.py) once the projector has committed
their effect and acknowledged them, but the commit's invalidation reaches this process on another
connection (listener.py) than the announcement that settled them: when the request is let through
it may still be on its way, and the cache could answer a document older than the position asked for.

PostgreSQL's promise: notifications of different transactions are delivered to a listening session
in the order the transactions committed (https://www.postgresql.org/docs/current/sql-notify.html:
"messages from different transactions are delivered in the order in which the transactions
committed"; the projector's `pg_notify` keeps that default).

The barrier. The listener notes the watermarks this process sees settled (`Freshness.visible`),
then commits a notification of its own on a channel only its session listens to. Every entry at or
below a noted watermark was acknowledged before the watermark was read, so its batch (and that
batch's invalidation) committed before it: before the barrier was sent, so before the barrier
committed. When the barrier comes back, every such invalidation has come back before it, and asyncpg
hands a session's notifications to their callbacks in the order received (one `call_soon` each):
each has been applied (`DocumentCache.apply`). The cache's fill rule keeps any document or list
page from being older than an applied invalidation. So from then on the cache reflects every entry up to the noted
watermarks: `through`. (Noting watermarks rather than times makes the test exact: no history of
when each watermark passed each position is needed.)

The request. One whose positions are all <= `through` uses the cache with no I/O: the common case, a
position settled a while ago. Otherwise it waits for the next barrier, one not yet sent: its
watermarks are noted after the request's positions were settled, so they cover them. At most one
barrier is in flight; every request asking meanwhile shares the next one; nobody asking, no barrier.
The wait is bounded by what is left of ORDERVIEW_MIN_POSITION_WAIT_MS; a barrier that does not come
back in time, or a lost connection (`close`: pending barriers fail, `through` starts over with the
next connection), makes the request read PostgreSQL: never an error on the cache's account.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from services.api.cache import DocumentCache
from services.api.freshness import NOTHING
from services.api.positions import EntryId, Positions


class Barrier:
    """How far the cache reflects the streams (`through`), and the barriers asked for."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.through: dict[str, EntryId] = {}
        self.open = False  # the listener is live: a barrier asked for will be sent
        self.sent = 0  # barriers sent
        self.counted = 0  # of which already added to the Prometheus counter
        self._wake = wake  # tells the listener a barrier is asked for
        self._next: asyncio.Future[bool] | None = None  # asked for, not sent yet
        self._in_flight: tuple[str, Positions, asyncio.Future[bool]] | None = None
        self._tokens = itertools.count(1)

    def reflects(self, positions: Positions) -> bool:
        """Whether every invalidation of an entry up to `positions` has reached the cache."""
        through = self.through
        return all(entry <= through.get(stream, NOTHING) for stream, entry in positions.items())

    async def wait(self, positions: Positions, seconds: float) -> bool:
        """Whether the cache reflects `positions` after the next barrier (False: read PostgreSQL)."""
        if not self.open:
            return False
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            self._wake()
        arrived = self._next
        try:
            async with asyncio.timeout(seconds):
                done = await asyncio.shield(arrived)
        except TimeoutError:
            return False
        return done and self.reflects(positions)

    # ---- the listener's side -------------------------------------------------------------------

    def asked(self) -> bool:
        return self._next is not None

    def start(self, watermarks: Positions) -> tuple[str, asyncio.Future[bool]]:
        """The next barrier is being sent, `watermarks` noted: its token and its arrival."""
        assert self._next is not None
        token = str(next(self._tokens))
        arrived, self._next = self._next, None
        self._in_flight = (token, watermarks, arrived)
        self.sent += 1
        return token, arrived

    def arrived(self, token: str) -> None:
        """A barrier's notification came back: the cache reflects what it noted."""
        if self._in_flight is None or self._in_flight[0] != token:
            return
        _, watermarks, arrived = self._in_flight
        self._in_flight = None
        for stream, entry in watermarks.items():
            if entry > self.through.get(stream, NOTHING):
                self.through[stream] = entry
        arrived.set_result(True)

    def close(self) -> None:
        """The connection is lost: pending barriers fail, and `through` starts over."""
        self.open = False
        self.through = {}
        pending = [self._next, self._in_flight[2] if self._in_flight else None]
        self._next = self._in_flight = None
        for arrived in pending:
            if arrived is not None and not arrived.done():
                arrived.set_result(False)


async def cache_for(
    cache: DocumentCache | None, barrier: Barrier | None, positions: Positions, seconds: float
) -> DocumentCache | None:
    """The cache a request naming `positions` may use: the cache once it reflects them, else none."""
    if cache is None or barrier is None:
        return cache
    if barrier.reflects(positions) or await barrier.wait(positions, seconds):
        return cache
    return None
