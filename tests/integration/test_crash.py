"""Crash safety by crashing: projector processes SIGKILLed mid-batch, restarted, compared with a model."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import pytest
import redis.exceptions

from orderview.settings import load_settings
from projections.tables import DEAD_LETTERS
from services.histories import varied, with_faults
from tests.chaos import Replicas
from tests.model import differences, expected_state, table_state
from tests.support import dead_letters, outstanding, publish_lines, wait_until_caught_up


async def crash_run(
    env,
    pool,
    redis_client,
    *,
    replicas: int,
    shards: int,
    kills: int,
    seed: int,
    name=None,
    orders: int = 2000,
):
    """`name(i)`: the key of shard i (default: the test's stream, `:i` appended when sharded)."""
    if name is None:
        base = env["ORDERVIEW_STREAMS"]
        name = (lambda i: f"{base}:{i}") if shards > 1 else (lambda i: base)
    streams = ",".join(name(i) for i in range(shards))
    env = {
        **env,
        "ORDERVIEW_STREAMS": streams,
        "ORDERVIEW_BATCH_SIZE": "40",
        "ORDERVIEW_CLAIM_IDLE_MS": "3000",
        "ORDERVIEW_GAP_TIMEOUT": "600",
        "ORDERVIEW_LOG_LEVEL": "WARNING",
    }
    settings = load_settings(env)
    valid = varied(seed, tenants=3, orders=orders)
    history = with_faults(valid, seed, duplicates=0.1, swaps=0.05, poison=24)
    await publish_lines(redis_client, settings, history.lines(random.Random(seed)))

    rng = random.Random(seed)
    group = Replicas({**os.environ, **env}, replicas)
    killed_mid_work = 0
    try:
        # Kill from the moment every stream's group exists: on a loaded machine the processes
        # take seconds to start, and killing them before they read would test nothing.
        deadline = asyncio.get_running_loop().time() + 60
        while (left := await _outstanding(redis_client, settings)) < 0:
            assert asyncio.get_running_loop().time() < deadline, "projectors did not start"
            await asyncio.sleep(0.1)
        assert left > 0, "the projectors finished before the first kill"
        await asyncio.sleep(1.0)
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 0.6))
            name = rng.choice(list(group.procs))
            killed_mid_work += await outstanding(redis_client, settings) > 0
            group.kill(name)
            group.start(name)
        await wait_until_caught_up(redis_client, settings, timeout=180)
    finally:
        codes = group.stop_all()
        group.close()
    assert set(codes.values()) == {0}, codes
    assert killed_mid_work >= kills // 2, (
        "the projectors finished before most kills: make the history longer"
    )

    assert differences(expected_state(history.events), await table_state(pool)) == []
    entries = []
    for stream in settings.streams:
        entries += await dead_letters(redis_client, stream)
    ids = Counter((d["stream"], d["entry_id"]) for d in entries)
    ledger = await pool.fetch(
        f"SELECT stream, entry_id, lease_owner, lease_at, created_at FROM {DEAD_LETTERS}"
    )
    assert [k for k, n in ids.items() if n > 1] == [], [tuple(r) for r in ledger]
    assert Counter(d["event"] for d in entries) == Counter(history.poison)
    assert await outstanding(redis_client, settings) == 0


async def _outstanding(client, settings) -> int:
    """outstanding(), -1 while a group does not exist yet."""
    try:
        return await outstanding(client, settings)
    except redis.exceptions.ResponseError:  # no such key: nothing published to that shard yet
        return -1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("replicas", "shards", "kills"),
    [
        pytest.param(1, 1, 6, id="one-replica-one-stream"),
        pytest.param(2, 4, 8, id="two-replicas-four-shards"),
        pytest.param(3, 4, 10, id="three-replicas-four-shards"),
    ],
)
async def test_projectors_killed_mid_batch_and_restarted_leave_the_tables_of_an_independent_fold(
    env, pool, redis_client, replicas, shards, kills
):
    await crash_run(
        env,
        pool,
        redis_client,
        replicas=replicas,
        shards=shards,
        kills=kills,
        seed=replicas * 100 + shards,
    )


async def test_sigterm_finishes_the_batch_in_hand_and_leaves_nothing_pending_for_the_consumer(
    env, pool, redis_client
):
    env = {**env, "ORDERVIEW_BATCH_SIZE": "200", "ORDERVIEW_LOG_LEVEL": "WARNING"}
    settings = load_settings(env)
    history = varied(21, orders=1500)
    await publish_lines(redis_client, settings, history.lines())
    group = Replicas({**os.environ, **env}, 1)
    # SIGTERM once the projector is at work: its group exists and it has taken a first batch
    # (on a loaded machine starting the process alone can take seconds).
    total = len(history.lines())
    for _ in range(600):
        left = await outstanding(redis_client, settings)
        if 0 <= left < total:
            break
        await asyncio.sleep(0.05)
    assert await outstanding(redis_client, settings) > 0, "the projector finished before SIGTERM"
    codes = group.stop_all()
    assert codes == {"projector-0": 0}
    pending = await redis_client.xpending(settings.streams[0], settings.consumer_group)
    assert pending["pending"] == 0, pending
    # What it acknowledged is committed: the rest is applied by the next projector.
    group = Replicas({**os.environ, **env}, 1)
    try:
        await wait_until_caught_up(redis_client, settings, timeout=120)
    finally:
        group.close()
    assert differences(expected_state(history.events), await table_state(pool)) == []
