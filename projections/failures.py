"""What a failure means for the projector: a connection lost or a server not answering for now
(`transient`: retried with a backoff), or a batch refused on its own content (`refused`: applied
again event by event, and an event that fails alone is dead-lettered).
"""

from __future__ import annotations

import asyncio

import asyncpg
import redis.exceptions

# Redis, or a Redis Cluster, not answering for now. On a cluster a failover in progress shows as
# CLUSTERDOWN, TRYAGAIN or MASTERDOWN, and a slot map the client cannot refresh (no node reachable)
# as RedisClusterException, which is not a RedisError.
REDIS_UNAVAILABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.RedisClusterException,
)
TRANSIENT = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    # A pooled connection that PostgreSQL closed (shutdown, terminated backend) while the next
    # query was being sent: "cannot switch to state N; another operation (2) is in progress".
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    *REDIS_UNAVAILABLE,
)


def transient(exc: BaseException) -> bool:
    """Whether `exc` is a lost connection or a server not answering for now: retried.

    Also uvloop's RuntimeError on a write to a connection the peer has closed (a killed Redis
    Cluster node): redis-py lets it through instead of a ConnectionError when the cluster client
    reuses such a connection (redis/redis-py#4287, MagicStack/uvloop#506)."""
    if isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
        return True
    return isinstance(exc, TRANSIENT)


def refused(exc: BaseException) -> bool:
    """Whether a batch failed on its own content rather than on a connection: PostgreSQL refused
    it (an index entry too wide, a constraint), or folding or rendering one of its events raised
    (a defect met by an event that validation let through). Such a batch is applied again event
    by event, and an event that fails alone is dead-lettered: one entry never stops the projector
    in a crash loop."""
    return (
        isinstance(exc, Exception)
        and not transient(exc)
        and not isinstance(exc, redis.exceptions.RedisError)
    )
