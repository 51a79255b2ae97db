"""The API's read replica, seen from the primary: WAL positions and replication lag.

When `ORDERVIEW_READ_DATABASE_URL` names another server than `ORDERVIEW_DATABASE_URL`, an entry
settled in Redis is committed on the primary but maybe not yet replayed on the replica. The API
reads the primary's WAL insert position after it sees a batch acknowledged
(`pg_current_wal_insert_lsn()`, then at or past that batch's commit record) and answers a waiting
`X-Min-Position` only once the replica has replayed up to it (`pg_last_wal_replay_lsn()`).
PostgreSQL has no notification of replay on a standby (LISTEN is refused in recovery), so that
last step is a short-interval check that runs only while a request waits and the replica is
behind.
"""

from __future__ import annotations

import logging
import math

import asyncpg
from prometheus_client import Gauge

log = logging.getLogger("orderview.api")

# The insert position, not pg_current_wal_lsn() (the write position): with asynchronous commit
# (synchronous_commit = off) a committed transaction's record may not be written yet.
_PRIMARY_LSN = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
# NULL when the server is not in recovery (a primary, or a promoted standby): nothing to wait for.
_REPLAYED_LSN = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
_REPLICA_LAG = """
SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END
"""

LAG_BYTES = Gauge(
    "orderview_api_replica_lag_bytes",
    "WAL bytes the read replica has still to replay (primary's current LSN minus replayed LSN)",
)
LAG_SECONDS = Gauge(
    "orderview_api_replica_lag_seconds",
    "Age of the last transaction the read replica replayed, 0 when it has replayed all it received",
)
REPLICA_UP = Gauge("orderview_api_replica_up", "1 when the last replica lag check answered")

CAUGHT_UP = math.inf  # what `replayed_lsn` returns for a server that is not in recovery


class Replica:
    """The primary's and the replica's pools, as the API uses them for freshness and lag."""

    def __init__(self, primary: asyncpg.Pool, replica: asyncpg.Pool) -> None:
        self.primary = primary
        self.replica = replica

    async def primary_lsn(self) -> int:
        """The primary's current WAL position (bytes since 0/0)."""
        return int(await self.primary.fetchval(_PRIMARY_LSN))

    async def replayed_lsn(self) -> float:
        """The WAL position the replica has replayed; CAUGHT_UP when it is not a standby."""
        lsn = await self.replica.fetchval(_REPLAYED_LSN)
        return CAUGHT_UP if lsn is None else int(lsn)

    async def refresh_lag(self) -> None:
        """Set the lag gauges (NaN and `up` 0 when either server does not answer)."""
        try:
            primary = await self.primary_lsn()
            replayed, seconds = await self.replica.fetchrow(_REPLICA_LAG)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("replica lag unavailable", extra={"error": repr(exc)})
            LAG_BYTES.set(math.nan)
            LAG_SECONDS.set(math.nan)
            REPLICA_UP.set(0)
            return
        LAG_BYTES.set(0 if replayed is None else max(primary - replayed, 0))
        LAG_SECONDS.set(float(seconds or 0))
        REPLICA_UP.set(1)
