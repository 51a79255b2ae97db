"""The read API application: `create_app(settings)`; its lifespan owns the pool and Redis client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from litestar import Litestar
from litestar.datastructures import State

from orderview.db import create_pool, create_redis, redis_client
from orderview.settings import Settings
from projections import release
from services.api import errors, handlers, openapi
from services.api.auth import KeyCache
from services.api.cache import DocumentCache
from services.api.edge import Edge
from services.api.freshness import Freshness
from services.api.listener import Listener
from services.api.replica import Replica

log = logging.getLogger("orderview.api")


def create_app(settings: Settings, on_startup: Sequence[Callable[[], None]] = ()) -> Edge:
    """The ASGI application of the read API (the Litestar app inside `.app`); `on_startup` runs
    at the start of its lifespan."""
    secret = settings.require("cursor_secret").encode()
    replica_url = settings.replica_url  # a replica needs the primary too: fail now if missing

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # min_size 0: the process starts (and is live) while PostgreSQL is still unreachable.
        pool = await create_pool(settings.read_url, name="api", min_size=0,
                                 max_size=settings.pool_max_size, read_only=True)  # fmt: skip
        warm = asyncio.create_task(_warm(pool, settings.pool_min_size))
        client = redis_client(settings) if settings.redis_url else None
        # The position announcements' subscription: on a Redis Cluster a plain connection to the
        # configured node (redis-py's cluster client has no reliable pub/sub here).
        subscriber = None
        if client is not None and settings.redis_cluster:
            subscriber = create_redis(settings.require("redis_url"), "orderview-api-positions")
        replica = None
        if replica_url is not None:
            primary = await create_pool(settings.require("database_url"), name="api-primary",
                                        min_size=0, max_size=2, read_only=True)  # fmt: skip
            replica = Replica(primary, pool)
        freshness = Freshness(
            client,
            settings.streams,
            settings.consumer_group,
            settings.min_position_wait_ms / 1000,
            replica,
            subscriber,
        )
        freshness.start()
        cache, listener = document_cache(settings, freshness)
        feed = asyncio.create_task(listener.run()) if listener is not None else None
        app.state.update(
            pool=pool,
            redis=client,
            key_cache=KeyCache(pool, settings.key_cache_seconds),
            cache=cache,
            cache_feed=listener,
            cache_barrier=listener.barrier if listener is not None else None,
            freshness=freshness,
            replica=replica,
        )
        # What exists now (modules, routes, the OpenAPI model) lives as long as the process: keep
        # it out of every later collection, whose full passes otherwise stall requests ~30 ms.
        gc.freeze()
        try:
            yield
        finally:
            # Under granian this runs once the worker has stopped accepting and answered every
            # request it had read: the drain is over when the pool closes.
            log.info("api worker drained")
            warm.cancel()
            await asyncio.wait([warm])  # its connections released before the pool closes
            if feed is not None:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed
            await freshness.close()
            if replica is not None:
                await asyncio.wait_for(replica.primary.close(), 10)
            for redis_conn in (client, subscriber):
                if redis_conn is not None:
                    await redis_conn.aclose()
            await asyncio.wait_for(pool.close(), 10)

    app = Litestar(
        route_handlers=[*handlers.ROUTES, openapi.docs_assets()],
        lifespan=[lifespan],
        on_startup=list(on_startup),
        exception_handlers=errors.HANDLERS,  # type: ignore[arg-type]
        openapi_config=openapi.openapi_config(),
        plugins=[openapi.MoneyAsNumber()],
        state=State({"secret": secret, "settings": settings}),
        logging_config=None,
    )
    return Edge(app)


def document_cache(
    settings: Settings, freshness: Freshness
) -> tuple[DocumentCache | None, Listener | None]:
    """The process's document cache and the listener that keeps it true, or none: off when
    ORDERVIEW_CACHE_MB is 0, and when the API reads from a replica (a hot standby cannot LISTEN,
    and a notification from the primary may arrive before the replica has replayed its commit)."""
    if settings.cache_mb == 0:
        log.info("document cache off", extra={"reason": "ORDERVIEW_CACHE_MB=0"})
        return None, None
    if settings.read_url != settings.database_url:
        log.info(
            "document cache off",
            extra={"reason": "ORDERVIEW_READ_DATABASE_URL differs from ORDERVIEW_DATABASE_URL"},
        )
        return None, None
    cache = DocumentCache(settings.cache_mb * 1024 * 1024)
    return cache, Listener(settings.read_url, cache, freshness.visible)


async def _warm(pool, size: int) -> None:
    """Open `size` connections ahead of traffic, retrying quietly until PostgreSQL answers."""
    while True:
        conns = []
        try:
            for _ in range(min(size, pool.get_max_size())):
                conns.append(await pool.acquire())
            break
        except Exception:  # unreachable for now; requests will say so
            await asyncio.sleep(1)
        finally:  # a stop during the warm-up must not leave connections held: close would wait
            for conn in conns:
                await pool.release(conn)
    try:
        await release.check(pool, "api")
    except Exception as exc:  # noqa: BLE001 - a report, never a reason to stop serving
        log.warning("could not read which release built the read model", extra={"error": repr(exc)})
