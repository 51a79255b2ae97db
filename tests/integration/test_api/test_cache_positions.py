"""Gets naming a position (`X-Min-Position`) through the document cache (services/api/barrier.py),
against real PostgreSQL, Redis and projector.

The API's connections to PostgreSQL pass through a proxy (tests/pgproxy.py) that can hold back what
the server sends to the cache's LISTEN session: the invalidation of a write is then committed and
acknowledged, its position settled, but not yet applied to the cache, the case a barrier exists
for. A cache answering such a request without its barrier answers the old document: each test here
that writes fails then.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time

import pytest

from orderview.settings import load_settings
from services.api.listener import APPLICATION_NAME
from services.api.positions import parse_entry_id
from tests.integration.test_api.conftest import api_env
from tests.integration.test_api.test_cache import metric, until
from tests.pgproxy import HoldingProxy
from tests.support import projector
from tests.writes import order_created, xadd

# Inside the whole suite this module has hung twice (the proxy's client-to-server pump spinning on
# a lost upstream; root cause not found), while alone it passes in seconds. Until that is found,
# it runs in a pytest process of its own: `.ci/run` runs it so, right after the whole suite.
pytestmark = pytest.mark.skipif(
    os.environ.get("ORDERVIEW_TEST_ALONE") != "1",
    reason="runs in a process of its own: "
    "ORDERVIEW_TEST_ALONE=1 pytest tests/integration/test_api/test_cache_positions.py",
)

HEADER = "X-Min-Position"
TENANT = "cbar"
WAIT_MS = 3000  # ORDERVIEW_MIN_POSITION_WAIT_MS here: longer than any hold below
_ids = itertools.count(1)


@pytest.fixture(scope="module")
async def proxy(database_url):
    proxy = HoldingProxy(database_url, APPLICATION_NAME)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture(scope="module")
def api_settings(database_url, redis_url, proxy):
    """This module's settings: the API reaches PostgreSQL through the proxy."""
    env = api_env(database_url, redis_url)
    env |= {"ORDERVIEW_DATABASE_URL": proxy.url, "ORDERVIEW_MIN_POSITION_WAIT_MS": str(WAIT_MS)}
    return load_settings(env)


@pytest.fixture(scope="module")
async def key(app, make_key):
    await until(lambda: _true(app.app.state.cache.online))
    return await make_key(TENANT, "service_orders,orders:read")


async def _true(value) -> bool:
    return bool(value)


@contextlib.asynccontextmanager
async def traffic(rclient, stream: str):
    """Events of another tenant appended every few milliseconds: the watermark keeps moving."""

    async def run() -> None:
        for n in itertools.count(1):
            await xadd(rclient, stream, order_created(f"{TENANT}-noise", n))
            await asyncio.sleep(0.005)

    task = asyncio.create_task(run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def path_of(order_id: int) -> str:
    """A get or a one-order list page of either dialect, by turns (both are cached)."""
    return [
        f"/v1/orders/ord_{order_id}",
        f"/api/v1/service-orders/{order_id}",
        f"/v1/orders?locationId=loc_ryw_{order_id}",
        f"/api/v1/service-orders?order_number=RYW-{order_id}",
    ][order_id % 4]


async def status(client, order_id: int, headers: dict) -> str:
    response = await client.get(path_of(order_id), headers=headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return data[0]["status"] if isinstance(data, list) else data["status"]


async def cached_draft(client, app, rclient, stream: str, key: dict) -> tuple[int, str]:
    """A new order, read with its position (a miss that fills) and then from the cache."""
    order_id = next(_ids)
    position = await xadd(rclient, stream, order_created(TENANT, order_id))
    assert await status(client, order_id, {**key, HEADER: f"{stream}@{position}"}) == "draft"
    hits = app.app.state.cache.hits
    assert await status(client, order_id, key) == "draft"
    assert app.app.state.cache.hits == hits + 1
    return order_id, position


async def submit_held(app, proxy, rclient, stream: str, order_id: int) -> str:
    """Submit the order while the cache's session is held: returns once the position is settled
    in this process, its invalidation still held back. The caller releases."""
    proxy.hold()
    position = await xadd(rclient, stream, order_created(TENANT, order_id, seq=2))
    entry = {stream: parse_entry_id(position)}
    await until(lambda: _true(app.app.state.freshness.covered(entry)))
    return position


async def test_a_write_read_at_once_shows_even_when_its_old_document_was_cached(
    app, client, proxy, rclient, api_settings, key
):
    stream = api_settings.streams[0]
    rnd = random.Random(12)
    async with projector(api_settings), traffic(rclient, stream):
        for round_ in range(30):
            order_id, _ = await cached_draft(client, app, rclient, stream, key)
            if round_ % 3:  # the invalidation held back until after the position is settled
                position = await submit_held(app, proxy, rclient, stream, order_id)
                read = asyncio.create_task(
                    status(client, order_id, {**key, HEADER: f"{stream}@{position}"})
                )
                await asyncio.sleep(rnd.uniform(0, 0.05))
                proxy.release()
                assert await read == "pending", round_
            else:  # as it comes
                position = await xadd(rclient, stream, order_created(TENANT, order_id, seq=2))
                fresh = {**key, HEADER: f"{stream}@{position}"}
                assert await status(client, order_id, fresh) == "pending", round_


async def test_a_long_settled_position_is_served_from_the_cache_without_a_query(
    app, client, rclient, api_settings, key
):
    stream = api_settings.streams[0]
    cache, barrier = app.app.state.cache, app.app.state.cache_barrier
    async with projector(api_settings), traffic(rclient, stream):
        order_id, position = await cached_draft(client, app, rclient, stream, key)
        fresh = {**key, HEADER: f"{stream}@{position}"}
        await asyncio.sleep(0.2)  # the watermark moves on past it
        hits, misses, sent = cache.hits, cache.misses, barrier.sent
        for _ in range(20):
            assert await status(client, order_id, fresh) == "draft"
        assert (cache.hits, cache.misses) == (hits + 20, misses)
        assert barrier.sent == sent  # not even a barrier: the cache reflects it already
    text = (await client.get("/metrics")).text
    assert metric(text, "orderview_api_cache_barriers_total") >= 1


async def test_concurrent_requests_share_one_barrier(
    app, client, proxy, rclient, api_settings, key
):
    stream = api_settings.streams[0]
    barrier = app.app.state.cache_barrier
    async with projector(api_settings):
        order_id, _ = await cached_draft(client, app, rclient, stream, key)
        position = await submit_held(app, proxy, rclient, stream, order_id)
        sent = barrier.sent
        fresh = {**key, HEADER: f"{stream}@{position}"}
        reads = [asyncio.create_task(status(client, order_id, fresh)) for _ in range(40)]
        await asyncio.sleep(0.2)
        proxy.release()
        assert await asyncio.gather(*reads) == ["pending"] * 40
        # One barrier, and at most one more for requests that asked once it was sent.
        assert 1 <= barrier.sent - sent <= 2


async def test_a_lost_listen_connection_answers_from_postgresql_then_recovers(
    app, client, proxy, rclient, api_settings, key
):
    stream = api_settings.streams[0]
    cache, feed = app.app.state.cache, app.app.state.cache_feed
    async with projector(api_settings):
        order_id, _ = await cached_draft(client, app, rclient, stream, key)
        position = await submit_held(app, proxy, rclient, stream, order_id)
        fresh = {**key, HEADER: f"{stream}@{position}"}
        read = asyncio.create_task(status(client, order_id, fresh))
        await asyncio.sleep(0.1)
        old_pid, cut_at = feed.backend_pid, time.monotonic()
        proxy.cut()  # the barrier in flight is lost with its connection
        assert await read == "pending"
        assert time.monotonic() - cut_at < WAIT_MS / 2000  # not left waiting out the budget
        proxy.release()
        await until(lambda: _true(cache.online and feed.backend_pid != old_pid))
        # Listening again: the position is served from the cache once a new barrier reflects it.
        assert await status(client, order_id, fresh) == "pending"
        hits = cache.hits
        assert await status(client, order_id, fresh) == "pending"
        assert cache.hits == hits + 1
