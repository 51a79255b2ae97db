"""PostgreSQL pools and Redis clients, opened by the process that owns them."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as redis
from redis.asyncio.cluster import RedisCluster

if TYPE_CHECKING:
    from orderview.settings import Settings

log = logging.getLogger("orderview.db")

# PostgreSQL or Redis not answering: the operator commands say so in one line (exit 2).
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    redis.ConnectionError,
    redis.TimeoutError,
)

# The schema predates this release (`orderview migrate` not run): said in one line, exit 2.
NOT_MIGRATED = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)


async def create_pool(
    dsn: str, *, name: str, min_size: int = 1, max_size: int = 10, read_only: bool = False
) -> asyncpg.Pool:
    """A pool on `dsn`, waiting (with backoff, logged) until PostgreSQL answers.

    `read_only`: the holder only runs single statements and changes no session state (no SET,
    LISTEN, advisory lock or cursor), so a released connection skips asyncpg's reset query, a
    second round trip per request. An open transaction is still rolled back on release.
    """
    delay = 0.2
    while True:
        try:
            return await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                server_settings={"application_name": f"orderview-{name}", "jit": "off"},
                reset=_keep_session if read_only else None,
            )
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError) as exc:
            log.warning(
                "PostgreSQL unreachable, retrying", extra={"error": repr(exc), "retry_in": delay}
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the reset query (asyncpg has already ended any open transaction)."""


def redis_client(settings: Settings, name: str | None = None) -> redis.Redis | RedisCluster:
    """The Redis client of these settings: a Redis Cluster client when ORDERVIEW_REDIS_CLUSTER
    is set. Every process that talks to Redis opens its client here."""
    return create_redis(settings.require("redis_url"), name, cluster=settings.redis_cluster)


def create_redis(
    url: str, name: str | None = None, *, cluster: bool = False
) -> redis.Redis | RedisCluster:
    """A Redis client returning bytes; connections open lazily and reconnect on demand. `name`
    is what CLIENT LIST shows for its connections (spaces, which Redis refuses, become `_`).

    `cluster`: `url` names one node of a Redis Cluster; the client learns the others and the
    slot map from it, follows MOVED/ASK redirections and re-reads the map after a failover. Its
    socket timeout is off, as a single client's is, so a blocking XREADGROUP may block as long
    as ORDERVIEW_BLOCK_MS allows."""
    options = {
        "decode_responses": False,
        "socket_keepalive": True,
        "health_check_interval": 15,
        "client_name": name.replace(" ", "_") if name else None,
    }
    if cluster:
        return RedisCluster.from_url(url, socket_timeout=None, **options)
    return redis.from_url(url, **options)
