"""The document cache's feed: one LISTEN connection to the database the API reads from.

While the connection listens, the projector's notifications (`projections.invalidation`) reach
`DocumentCache.apply` and the cache serves. The moment the connection is lost, or not listening
yet, the cache goes offline (emptied, bypassed: it may have missed an invalidation); it comes back
once LISTEN is in effect again. A silent loss (a dead peer that sends no reset) is caught by a
round trip every `CHECK_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from projections.invalidation import CHANNEL
from services.api.cache import DocumentCache

log = logging.getLogger("orderview.api")

CHECK_SECONDS = 1.0
TIMEOUT_SECONDS = 2.0


class Listener:
    """Keeps `cache` online exactly while a LISTEN connection on `dsn` is known to be live."""

    def __init__(self, dsn: str, cache: DocumentCache) -> None:
        self.dsn = dsn
        self.cache = cache
        self._lost = asyncio.Event()
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
                    server_settings={"application_name": "orderview-api-cache"},
                )
                self._lost.clear()
                conn.add_termination_listener(self._on_close)
                await conn.add_listener(CHANNEL, self._on_notify)
                self.backend_pid = conn.get_server_pid()
                self.cache.go_online()  # LISTEN is in effect: every later commit is heard
                listening = True
                log.info("document cache listening", extra={"channel": CHANNEL})
                delay = 0.1
                await self._watch(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, refused, terminated, timed out: retry
                if listening:
                    log.warning(
                        "document cache feed lost, cache bypassed until it listens again",
                        extra={"error": repr(exc)},
                    )
            finally:
                self.cache.go_offline()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _watch(self, conn: asyncpg.Connection) -> None:
        """Return (raise) when the connection is lost."""
        while True:
            try:
                await asyncio.wait_for(self._lost.wait(), CHECK_SECONDS)
                raise ConnectionError("the LISTEN connection closed")
            except TimeoutError:
                pass
            await conn.fetchval("SELECT 1", timeout=TIMEOUT_SECONDS)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.cache.apply(payload)

    def _on_close(self, conn: object) -> None:
        self.cache.go_offline()  # at once, before the loop notices
        self._lost.set()
