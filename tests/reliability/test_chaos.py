"""Projector chaos: three projector processes on one group and four shards, a random one SIGKILLed
every 0.2-1 s and restarted (a third of the time as a new consumer, as a rescheduled pod is) while
the history is being published: duplicates, gaps that fill later, poison entries and participant
renames. The tables must equal the independent model, the DLQ hold exactly the poison entries.

    .venv/bin/pytest tests/reliability/test_chaos.py -s                  # short: >= 10 kills
    ORDERVIEW_LONG=1 .venv/bin/pytest tests/reliability/test_chaos.py -s # long: >= 50 000 events, >= 50 kills
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import pytest
import redis.asyncio as redis

from orderview.settings import load_settings
from services.histories import varied, with_faults
from tests.chaos import LONG, Replicas, scale
from tests.model import differences, expected_state, table_state
from tests.support import dead_letters, outstanding, publish_lines, wait_until_caught_up

SHARDS = 4
REPLICAS = 3


async def publish_paced(client, settings, lines: list[str], seconds: float) -> None:
    """Publish `lines` in slices spread over about `seconds`, as producers would."""
    slices = max(1, int(seconds / 0.1))
    size = -(-len(lines) // slices)
    for i in range(0, len(lines), size):
        await publish_lines(client, settings, lines[i : i + size])
        await asyncio.sleep(0.1)


async def in_hand(client, settings, consumer: str) -> int:
    """Entries delivered to `consumer` and not yet acknowledged, over every stream."""
    total = 0
    for stream in settings.streams:
        try:
            consumers = await client.xinfo_consumers(stream, settings.consumer_group)
        except redis.ResponseError:  # no group yet: nothing was delivered
            continue
        for c in consumers:
            name = c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
            total += c["pending"] if name == consumer else 0
    return total


async def kill_while(task: asyncio.Task, group: Replicas, client, settings, rng, least: int):
    """SIGKILL a random replica every 0.2-1 s until `task` is done and `least` kills are made;
    restart it, as a new consumer name one time in three. Returns (kills, kills mid-work)."""
    kills = mid_work = 0
    while kills < least or not task.done():
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        name = rng.choice(sorted(group.procs))
        mid_work += await in_hand(client, settings, name) > 0
        fresh = f"{name.split('.')[0]}.{kills}" if rng.random() < 1 / 3 else None
        group.restart(name, fresh)
        kills += 1
    return kills, mid_work


@pytest.mark.slow
async def test_projectors_killed_at_random_while_events_arrive_leave_the_tables_of_the_model(
    env, pool, redis_client
):
    seed = 7
    env = {
        **env,
        "ORDERVIEW_STREAMS": ",".join(f"{env['ORDERVIEW_STREAMS']}:{i}" for i in range(SHARDS)),
        "ORDERVIEW_BATCH_SIZE": "100",
        "ORDERVIEW_CLAIM_IDLE_MS": "2000",
        "ORDERVIEW_GAP_TIMEOUT": "600",
        "ORDERVIEW_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(env)
    valid = varied(seed, tenants=scale(3, 5), orders=scale(800, 2000))
    history = with_faults(valid, seed, duplicates=0.1, swaps=0.05, poison=scale(36, 240))
    lines = history.lines(random.Random(seed))
    renames = sum(e["type"] == "participant.upserted" and e["seq"] > 1 for e in valid.events)

    started = time.monotonic()
    group = Replicas({**os.environ, **env}, REPLICAS)
    try:
        publishing = asyncio.create_task(publish_paced(redis_client, settings, lines, scale(6, 40)))
        kills, mid_work = await kill_while(
            publishing, group, redis_client, settings, random.Random(seed), scale(10, 50)
        )
        await publishing
        await wait_until_caught_up(redis_client, settings, timeout=240)
        codes = group.stop_all()
    finally:
        logs = group.logs()
        group.close()
    elapsed = time.monotonic() - started

    assert set(codes.values()) == {0}, (codes, logs)
    assert kills >= scale(10, 50)
    assert mid_work >= kills // 2, "most kills found nothing in hand: publish more"
    assert differences(expected_state(history.events), await table_state(pool)) == []
    entries = [d for s in settings.streams for d in await dead_letters(redis_client, s)]
    assert Counter(d["event"] for d in entries) == Counter(history.poison)
    assert all(d["error"] for d in entries)
    assert [k for k, n in Counter((d["stream"], d["entry_id"]) for d in entries).items() if n > 1] == []  # fmt: skip
    assert await outstanding(redis_client, settings) == 0
    for stream in settings.streams:
        assert (await redis_client.xpending(stream, settings.consumer_group))["pending"] == 0
    print(
        f"\nchaos ({'long' if LONG else 'short'}): {len(lines)} entries ({len(valid.events)} "
        f"events, {len(history.events) - len(valid.events)} duplicates, {len(history.poison)} "
        f"poison, {renames} renames) on {SHARDS} shards, {REPLICAS} projectors, {kills} kills "
        f"({mid_work} mid-work), {elapsed:.1f}s; lost 0, DLQ {len(entries)}"
    )
