"""The document cache's feed: one LISTEN connection to the database the API reads from.

While the connection listens, the projector's notifications (`projections.invalidation`) reach
`DocumentCache.apply` and the cache serves. The moment the connection is lost, or not listening
yet, the cache goes offline (emptied, bypassed: it may have missed an invalidation); it comes back
once LISTEN is in effect again. A silent loss (a dead peer that sends no reset) is caught by a
round trip every `CHECK_SECONDS`.

The same connection sends the barriers that let a request naming positions use the cache
(barrier.py): it also listens on a channel of its own session, `BARRIER_CHANNEL`_<backend pid>, and
sends one barrier at a time, only when one is asked for. A barrier that does not come back within
`TIMEOUT_SECONDS` means notifications are not arriving: the connection is dropped as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from projections.invalidation import CHANNEL
from services.api.barrier import Barrier
from services.api.cache import DocumentCache
from services.api.positions import Positions

log = logging.getLogger("orderview.api")

APPLICATION_NAME = "orderview-api-cache"
BARRIER_CHANNEL = "orderview_cache_barrier"
CHECK_SECONDS = 1.0
TIMEOUT_SECONDS = 2.0
_BARRIER = "SELECT pg_notify($1, $2)"


class Listener:
    """Keeps `cache` online exactly while a LISTEN connection on `dsn` is known to be live;
    `watermarks()` are the positions this process sees settled (noted by each barrier)."""

    def __init__(self, dsn: str, cache: DocumentCache, watermarks: Callable[[], Positions]) -> None:
        self.dsn = dsn
        self.cache = cache
        self._watermarks = watermarks
        self._wake = asyncio.Event()
        self._lost = False
        self.barrier = Barrier(self._wake.set)
        self.backend_pid: int | None = None  # the listening session's server process

    async def run(self) -> None:
        """Listen, and listen again after every loss, until cancelled."""
        delay = 0.1
        while True:
            conn, listening = None, False
            try:
                conn = await asyncpg.connect(
                    self.dsn,
                    timeout=TIMEOUT_SECONDS,
                    server_settings={"application_name": APPLICATION_NAME},
                )
                self._lost = False
                conn.add_termination_listener(self._on_close)
                await conn.add_listener(CHANNEL, self._on_notify)
                self.backend_pid = conn.get_server_pid()
                channel = f"{BARRIER_CHANNEL}_{self.backend_pid}"
                await conn.add_listener(channel, self._on_barrier)
                self.cache.go_online()  # LISTEN is in effect: every later commit is heard
                self.barrier.open = True
                listening = True
                log.info("document cache listening", extra={"channel": CHANNEL})
                delay = 0.1
                await self._watch(conn, channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, refused, terminated, timed out: retry
                if listening:
                    log.warning(
                        "document cache feed lost, cache bypassed until it listens again",
                        extra={"error": repr(exc)},
                    )
            finally:
                self._offline()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _watch(self, conn: asyncpg.Connection, channel: str) -> None:
        """Send the barriers asked for, check the connection when idle; raise when it is lost."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CHECK_SECONDS)
            self._wake.clear()
            if self._lost:
                raise ConnectionError("the LISTEN connection closed")
            if self.barrier.asked():
                token, arrived = self.barrier.start(self._watermarks())
                await conn.execute(_BARRIER, channel, token, timeout=TIMEOUT_SECONDS)
                await asyncio.wait_for(asyncio.shield(arrived), TIMEOUT_SECONDS)
            else:
                await conn.fetchval("SELECT 1", timeout=TIMEOUT_SECONDS)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.cache.apply(payload)

    def _on_barrier(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.barrier.arrived(payload)

    def _on_close(self, conn: object) -> None:
        self._offline()  # at once, before the loop notices
        self._lost = True
        self._wake.set()

    def _offline(self) -> None:
        self.cache.go_offline()
        self.barrier.close()
