"""`orderview rebuild`: the read model built again from the streams (or a file) into a schema of its
own and swapped in, with the live projector's decisions: the same rows, byte for byte."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from orderview.settings import Settings, load_settings
from projections.rebuilds import REBUILD_LOCK, rebuild_status
from projections.tables import NEXT_SCHEMA, OLD_SCHEMA, ORDERS, PARTICIPANTS
from services.rebuild import RebuildBusy, run_rebuild
from tests.conftest import RUN_ID, create_database, drop_database
from tests.histories import generate_varied, with_faults
from tests.model import differences, expected_state, table_state
from tests.support import (
    projector,
    publish_lines,
    run_orderview,
    wait_until_caught_up,
)

ROWS = f"SELECT * FROM {ORDERS} ORDER BY tenant, id"
PARTS = f"SELECT * FROM {PARTICIPANTS} ORDER BY tenant, id"
INDEXES = "SELECT indexdef FROM pg_indexes WHERE schemaname = 'read_model' ORDER BY 1"
_databases = iter(range(1, 1000))


@pytest.fixture
async def fresh(servers, redis_url, stream_prefix) -> AsyncIterator[tuple[dict, asyncpg.Pool]]:
    """A migrated database of this test's own (a rebuild swaps the whole read-model schema), its
    environment (three streams) and a pool on it."""
    name = f"orderview_test_{RUN_ID}_rebuild_{next(_databases)}"
    url = await asyncio.to_thread(create_database, servers[0], name)
    env = {
        "ORDERVIEW_DATABASE_URL": url,
        "ORDERVIEW_REDIS_URL": redis_url,
        "ORDERVIEW_STREAMS": ",".join(f"{stream_prefix}:events:{n}" for n in range(3)),
        "ORDERVIEW_CONSUMER_NAME": "test-consumer",
        "ORDERVIEW_METRICS_PORT": "0",
        "ORDERVIEW_BLOCK_MS": "100",
        "ORDERVIEW_GAP_TIMEOUT": "0.5",
    }
    assert (await asyncio.to_thread(run_orderview, env, "migrate")).returncode == 0
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        yield env, pool
    finally:
        await pool.close()
        await asyncio.to_thread(drop_database, servers[0], url)


async def snapshot(pool: asyncpg.Pool) -> tuple[list, list]:
    """Every row of both read tables, every column."""
    return [dict(r) for r in await pool.fetch(ROWS)], [dict(r) for r in await pool.fetch(PARTS)]


def faulty_lines(seed: int) -> tuple[list[dict], list[str]]:
    """A varied history's events, and its lines with duplicates, swapped neighbours (gaps that
    fill), unknown types and poison; the independent model of the lines is that of the events."""
    history = generate_varied(seed, orders=(15, 10))
    faulty = with_faults(history, seed, duplicates=0.15, swaps=0.1, poison=6)
    unknown = dict(history.events[3], type="order.teleported", seq=999, id="unknown-type")
    return history.events, [*faulty.lines(random.Random(seed)), json.dumps(unknown)]


async def dead_letter_counts(client, settings: Settings) -> list[int]:
    return [await client.xlen(f"{s}:dlq") for s in settings.streams]


async def test_a_rebuild_writes_what_the_live_projector_wrote_byte_for_byte(fresh, redis_client):
    env, pool = fresh
    settings = load_settings(env)
    events, lines = faulty_lines(11)
    # A gap that times out (its predecessor comes after the live projector gave up): dead-lettered
    # by the live projector, it must be dead in the rebuild too, though its predecessor is there.
    late = [e for e in events if e["aggregate_id"] == 2 and e["type"].startswith("order.")]
    withheld = json.dumps(late[1])
    lines = [line for line in lines if line != withheld]
    async with projector(settings):
        await publish_lines(redis_client, settings, lines)
        await wait_until_caught_up(redis_client, settings, allowed=0, timeout=60)
        await publish_lines(redis_client, settings, [json.dumps(late[1])])
        await wait_until_caught_up(redis_client, settings, timeout=60)
    live = await snapshot(pool)
    dead = await dead_letter_counts(redis_client, settings)
    assert sum(dead) >= 7  # the poison lines and the gap

    counts = await run_rebuild(settings)

    assert await snapshot(pool) == live
    assert await dead_letter_counts(redis_client, settings) == dead  # nothing dead-lettered again
    assert counts["dead"] >= 2 and counts["duplicates"] > 0 and counts["poison"] == 6
    status = await rebuild_status(pool)
    assert status["rebuild"]["phase"] == "done" and not status["rebuild_running"]
    assert status["read_model_release"] == status["this_release"]
    schemas = {r[0] for r in await pool.fetch("SELECT nspname FROM pg_namespace")}
    assert not schemas & {NEXT_SCHEMA, OLD_SCHEMA}


async def test_a_rebuild_equals_an_independent_fold_and_has_every_index(fresh, redis_client):
    env, pool = fresh
    settings = load_settings(env)
    events, lines = faulty_lines(12)
    await publish_lines(redis_client, settings, lines)
    migrated = await pool.fetch(INDEXES)

    await run_rebuild(settings)

    assert differences(expected_state(events), await table_state(pool)) == []
    assert await pool.fetch(INDEXES) == migrated and len(migrated) == 15


async def test_the_live_projector_continues_on_the_rebuilt_model(fresh, redis_client):
    env, pool = fresh
    settings = load_settings(env)
    events, lines = faulty_lines(13)
    half = len(lines) // 2
    async with projector(settings):
        await publish_lines(redis_client, settings, lines[:half])
        await wait_until_caught_up(redis_client, settings, timeout=60)
        await run_rebuild(settings)
        await publish_lines(redis_client, settings, lines[half:])
        await wait_until_caught_up(redis_client, settings, timeout=60)
    assert differences(expected_state(events), await table_state(pool)) == []


async def test_a_second_rebuild_refuses_with_one_line(fresh):
    env, pool = fresh
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", REBUILD_LOCK)
        with pytest.raises(RebuildBusy):
            await run_rebuild(load_settings(env))
        done = await asyncio.to_thread(run_orderview, env, "rebuild", "--yes")
        await conn.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "orderview: another rebuild is running (it holds the rebuild lock)"
    ]


async def test_a_rebuild_from_a_file_reports_bad_lines_like_publish(fresh, tmp_path: Path):
    env, pool = fresh
    events, lines = faulty_lines(14)
    lines[5:5] = ["{not json", ""]
    source = tmp_path / "archive.jsonl"
    source.write_text("\n".join(lines) + "\n")

    done = await asyncio.to_thread(run_orderview, env, "rebuild", "--from", str(source), "--yes")

    assert done.returncode == 0, done.stderr
    assert f"{source}:6: not JSON, skipped" in done.stderr
    assert differences(expected_state(events), await table_state(pool)) == []


async def test_rebuild_from_a_missing_file_stops_with_one_line(fresh, tmp_path: Path):
    env, _ = fresh
    done = await asyncio.to_thread(
        run_orderview, env, "rebuild", "--from", str(tmp_path / "nope.jsonl"), "--yes"
    )
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "nope.jsonl" in done.stderr


async def test_rebuild_without_a_terminal_or_yes_refuses_with_one_line(fresh):
    env, pool = fresh
    done = await asyncio.to_thread(run_orderview, env, "rebuild")
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "--yes" in done.stderr
    assert (await rebuild_status(pool))["rebuild"] is None
