"""The barrier bookkeeping (services/api/barrier.py) without I/O: the listener's side played here."""

from __future__ import annotations

import asyncio

from services.api.barrier import Barrier, cache_for
from services.api.cache import DocumentCache

S, T = "orders:events", "other:events"


class Feed:
    """The listener's part: counts wake-ups, sends the barrier asked for, brings it back."""

    def __init__(self) -> None:
        self.wakes = 0
        self.barrier = Barrier(self.wake)
        self.barrier.open = True

    def wake(self) -> None:
        self.wakes += 1

    def send(self, watermarks: dict) -> str:
        token, _ = self.barrier.start(watermarks)
        return token


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_position_already_reflected_needs_no_barrier():
    feed = Feed()
    waiter = asyncio.create_task(feed.barrier.wait({S: (5, 0)}, 1))
    await settle()
    feed.barrier.arrived(feed.send({S: (9, 0), T: (1, 0)}))
    assert await waiter
    assert feed.barrier.reflects({S: (9, 0)}) and feed.barrier.reflects({S: (3, 0), T: (1, 0)})
    assert not feed.barrier.reflects({S: (9, 1)}) and not feed.barrier.reflects({T: (1, 1)})
    cache = DocumentCache(1 << 20)
    sent = feed.barrier.sent
    assert await cache_for(cache, feed.barrier, {S: (2, 0)}, 1) is cache
    assert feed.barrier.sent == sent and not feed.barrier.asked()


async def test_requests_share_one_barrier_and_later_ones_the_next():
    feed = Feed()
    early = [asyncio.create_task(feed.barrier.wait({S: (i, 0)}, 1)) for i in range(1, 20)]
    await settle()
    assert feed.wakes == 1 and feed.barrier.asked()
    token = feed.send({S: (19, 0)})
    late = asyncio.create_task(feed.barrier.wait({S: (25, 0)}, 1))  # settled after it was sent
    await settle()
    assert feed.barrier.asked() and feed.wakes == 2
    feed.barrier.arrived("not-this-one")
    feed.barrier.arrived(token)
    assert all(await asyncio.gather(*early))
    assert not late.done()
    feed.barrier.arrived(feed.send({S: (25, 0)}))
    assert await late
    assert feed.barrier.sent == 2


async def test_a_barrier_that_does_not_come_back_in_time_means_postgresql():
    feed = Feed()
    cache = DocumentCache(1 << 20)
    assert await cache_for(cache, feed.barrier, {S: (1, 0)}, 0.05) is None
    assert feed.barrier.asked()  # still asked for: the next request shares it


async def test_a_lost_connection_fails_pending_barriers_and_starts_over():
    feed = Feed()
    waiting = asyncio.create_task(feed.barrier.wait({S: (1, 0)}, 1))
    await settle()
    feed.send({S: (5, 0)})
    queued = asyncio.create_task(feed.barrier.wait({S: (2, 0)}, 1))
    await settle()
    feed.barrier.close()
    assert await asyncio.wait_for(asyncio.gather(waiting, queued), 0.5) == [False, False]
    assert feed.barrier.through == {} and not feed.barrier.asked()
    assert not await feed.barrier.wait({S: (1, 0)}, 1)  # offline: no barrier is asked for
    assert not feed.barrier.asked()


async def test_without_a_cache_or_barrier_nothing_changes():
    cache = DocumentCache(1 << 20)
    assert await cache_for(None, Barrier(lambda: None), {S: (1, 0)}, 1) is None
    assert await cache_for(cache, None, {S: (1, 0)}, 1) is cache
