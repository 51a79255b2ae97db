"""The read API application: `create_app(settings)`; its lifespan owns the pool and Redis client."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from litestar import Litestar
from litestar.datastructures import State

from orderview.db import create_pool, create_redis
from orderview.settings import Settings
from services.api import errors, handlers, openapi
from services.api.auth import KeyCache
from services.api.edge import Edge

log = logging.getLogger("orderview.api")


def create_app(settings: Settings) -> Edge:
    """The ASGI application of the read API (the Litestar app inside `.app`)."""
    secret = settings.require("cursor_secret").encode()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # min_size 0: the process starts (and is live) while PostgreSQL is still unreachable.
        pool = await create_pool(settings.read_url, name="api", min_size=0,
                                 max_size=settings.pool_max_size, read_only=True)  # fmt: skip
        warm = asyncio.create_task(_warm(pool, settings.pool_min_size))
        client = create_redis(settings.redis_url) if settings.redis_url else None
        app.state.update(
            pool=pool, redis=client, key_cache=KeyCache(pool, settings.key_cache_seconds)
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
            if client is not None:
                await client.aclose()
            await asyncio.wait_for(pool.close(), 10)

    app = Litestar(
        route_handlers=[*handlers.ROUTES, openapi.docs_assets()],
        lifespan=[lifespan],
        exception_handlers=errors.HANDLERS,  # type: ignore[arg-type]
        openapi_config=openapi.openapi_config(),
        plugins=[openapi.MoneyAsNumber()],
        state=State({"secret": secret, "settings": settings}),
        logging_config=None,
    )
    return Edge(app)


async def _warm(pool, size: int) -> None:
    """Open `size` connections ahead of traffic, retrying quietly until PostgreSQL answers."""
    while True:
        try:
            conns = [await pool.acquire() for _ in range(min(size, pool.get_max_size()))]
            for conn in conns:
                await pool.release(conn)
            return
        except Exception:  # unreachable for now; requests will say so
            await asyncio.sleep(1)
