"""Position waits against a real Redis, PostgreSQL and projector (services/api/freshness.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from projections.tables import ORDERS
from services.api.freshness import Freshness, PositionNotReached
from services.api.positions import parse_entry_id
from tests.support import projector
from tests.writes import order_created, xadd


@contextlib.asynccontextmanager
async def freshness(redis_client, settings, wait: float = 5.0):
    fresh = Freshness(redis_client, settings.streams, settings.consumer_group, wait)
    fresh.start()
    try:
        yield fresh
    finally:
        await fresh.close()


def at(stream: str, entry_id: str) -> dict:
    return {stream: parse_entry_id(entry_id)}


async def test_every_write_is_committed_once_its_position_is_reached(pool, redis_client, settings):
    stream = settings.streams[0]
    async with projector(settings), freshness(redis_client, settings) as fresh:
        for order_id in range(1, 201):
            position = await xadd(redis_client, stream, order_created("acme", order_id))
            await fresh.wait(at(stream, position))
            found = await pool.fetchval(
                f"SELECT count(*) FROM {ORDERS} WHERE tenant = 'acme' AND id = $1", order_id
            )
            assert found == 1, f"order {order_id} not visible once {position} was reached"


async def test_a_covered_position_answers_without_suspending(redis_client, settings):
    stream = settings.streams[0]
    async with projector(settings), freshness(redis_client, settings) as fresh:
        position = await xadd(redis_client, stream, order_created("acme", 1))
        await fresh.wait(at(stream, position))
        waiting = fresh.wait(at(stream, position))
        with pytest.raises(StopIteration):  # finished at the first step: no I/O at all
            waiting.send(None)


async def test_without_a_projector_the_wait_ends_in_position_not_reached(redis_client, settings):
    stream = settings.streams[0]
    position = await xadd(redis_client, stream, order_created("acme", 1))
    async with freshness(redis_client, settings, wait=0.3) as fresh:
        with pytest.raises(PositionNotReached):
            await fresh.wait(at(stream, position))


async def test_a_held_gap_blocks_until_its_predecessor_arrives(pool, redis_client, settings):
    stream = settings.streams[0]
    async with projector(settings), freshness(redis_client, settings, wait=0.5) as fresh:
        before = await xadd(redis_client, stream, order_created("acme", 7))
        await fresh.wait(at(stream, before))
        # seq 3 of order 8 while seq 1 and 2 are missing: held, pending
        held = await xadd(redis_client, stream, order_created("acme", 8, seq=3))
        after = await xadd(redis_client, stream, order_created("acme", 9))
        await fresh.wait(at(stream, before))  # earlier entries stay reachable
        for position in (held, after):
            with pytest.raises(PositionNotReached):
                await fresh.wait(at(stream, position))
        await xadd(redis_client, stream, order_created("acme", 8, seq=1))
        await xadd(redis_client, stream, order_created("acme", 8, seq=2))
        await fresh.wait(at(stream, after))
        seq = await pool.fetchval(f"SELECT seq FROM {ORDERS} WHERE tenant = 'acme' AND id = 8")
        assert seq == 3


async def test_waiters_wake_when_the_projector_starts_later(pool, redis_client, settings):
    stream = settings.streams[0]
    positions = [await xadd(redis_client, stream, order_created("acme", i)) for i in range(1, 6)]
    async with freshness(redis_client, settings, wait=30) as fresh:
        waits = [asyncio.create_task(fresh.wait(at(stream, p))) for p in positions]
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waits)
        async with projector(settings):
            await asyncio.wait_for(asyncio.gather(*waits), 20)
        assert await pool.fetchval(f"SELECT count(*) FROM {ORDERS} WHERE tenant = 'acme'") == 5
