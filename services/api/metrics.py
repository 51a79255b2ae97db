"""Prometheus metrics of the API: requests by route and status, pool usage, projector lag."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import redis.asyncio as redis
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from projections.failures import REDIS_UNAVAILABLE, transient
from projections.metrics import LAG, PENDING
from services.api.barrier import Barrier
from services.api.cache import DocumentCache

log = logging.getLogger("orderview.api")

REQUESTS = Counter(
    "orderview_api_requests_total", "HTTP requests answered", ["route", "method", "status"]
)
LATENCY = Histogram(
    "orderview_api_request_seconds",
    "Time to answer an HTTP request",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
POOL = Gauge("orderview_api_pool_connections", "API connection pool", ["state"])
REDIS_UP = Gauge("orderview_api_redis_up", "1 when the last XINFO GROUPS of the streams answered")
CACHE_HITS = Counter(
    "orderview_api_cache_hits_total", "Gets and list pages answered from the document cache"
)
CACHE_MISSES = Counter(
    "orderview_api_cache_misses_total",
    "Gets and list pages the document cache could have answered but did not",
)
CACHE_BYTES = Gauge("orderview_api_cache_bytes", "Document cache size (documents and overhead)")
CACHE_LIMIT = Gauge("orderview_api_cache_limit_bytes", "ORDERVIEW_CACHE_MB in bytes (0: off)")
CACHE_ENTRIES = Gauge(
    "orderview_api_cache_entries", "Rendered documents and list pages in the cache"
)
CACHE_ONLINE = Gauge(
    "orderview_api_cache_listening", "1 while the cache hears the projector (and so serves)"
)
CACHE_BARRIERS = Counter(
    "orderview_api_cache_barriers_total",
    "Barriers sent so that gets naming an X-Min-Position the cache did not yet reflect could use it",
)
CONTENT_TYPE = CONTENT_TYPE_LATEST

_children: dict[tuple[str, str, int], tuple] = {}


def observe(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    key = (route, method, status)
    child = _children.get(key)
    if child is None:
        code = str(status)
        child = _children[key] = (REQUESTS.labels(route, method, code), LATENCY.labels(route, code))
    child[0].inc()
    child[1].observe(seconds)


def cache_gauges(cache: DocumentCache | None, barrier: Barrier | None) -> None:
    """Bring the cache's metrics up to date (its counters are plain ints on the hot path)."""
    if barrier is not None:
        CACHE_BARRIERS.inc(barrier.sent - barrier.counted)
        barrier.counted = barrier.sent
    if cache is None:
        CACHE_LIMIT.set(0)
        CACHE_ONLINE.set(0)
        return
    hits, misses = cache.counted
    CACHE_HITS.inc(cache.hits - hits)
    CACHE_MISSES.inc(cache.misses - misses)
    cache.counted = (cache.hits, cache.misses)
    CACHE_BYTES.set(cache.size)
    CACHE_LIMIT.set(cache.limit)
    CACHE_ENTRIES.set(len(cache))
    CACHE_ONLINE.set(int(cache.online))


async def render(
    pool: asyncpg.Pool | None, client: redis.Redis | None, streams: tuple[str, ...], group: str
) -> bytes:
    """The text exposition, pool and projector-lag gauges refreshed first."""
    if pool is not None:
        POOL.labels("max").set(pool.get_max_size())
        POOL.labels("open").set(pool.get_size())
        POOL.labels("idle").set(pool.get_idle_size())
        POOL.labels("in_use").set(pool.get_size() - pool.get_idle_size())
    if client is not None:
        await _projector_lag(client, streams, group)
    return generate_latest()


async def _projector_lag(client: redis.Redis, streams: tuple[str, ...], group: str) -> None:
    try:
        for stream in streams:
            async with asyncio.timeout(1):
                groups = await _groups(client, stream)
            info = groups.get(group.encode(), {})
            lag = info.get("lag")
            LAG.labels(stream).set(float("nan") if lag is None else lag)
            PENDING.labels(stream).set(info.get("pending", 0))
        REDIS_UP.set(1)
    except Exception as exc:
        if not (isinstance(exc, redis.RedisError | TimeoutError) or transient(exc)):
            raise
        log.warning("projector lag unavailable", extra={"error": repr(exc)})
        REDIS_UP.set(0)


async def _groups(client: redis.Redis, stream: str) -> dict[bytes, dict]:
    try:
        groups = await client.xinfo_groups(stream)
    except REDIS_UNAVAILABLE:  # CLUSTERDOWN is a ResponseError too
        raise
    except redis.ResponseError:  # the stream does not exist yet
        return {}
    return {g["name"] if isinstance(g["name"], bytes) else g["name"].encode(): g for g in groups}
