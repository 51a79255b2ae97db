"""`orderview rebuild`: the read model built again from the streams (or a file) into a schema of its
own and swapped in, with the live projector's decisions: the same rows, byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from orderview.settings import Settings, load_settings
from projections import rebuilds, release
from projections.invalidation import CHANNEL
from projections.rebuilds import REBUILD_LOCK, rebuild_status
from projections.tables import NEXT_SCHEMA, OLD_SCHEMA, ORDERS, PARTICIPANTS
from projections.writer import READ_MODEL_LOCK
from services.api.app import create_app
from services.api.keys import create_key, set_feature
from services.histories import varied, with_faults
from services.rebuild import RebuildBusy, run_rebuild
from services.status import rebuild_in_progress
from tests.conftest import RUN_ID, create_database, drop_database
from tests.integration.test_api.test_random_documents import (
    V1,
    V2,
    compare,
    expected_orders,
    ordered,
    v1_doc,
    v2_doc,
    walk,
)
from tests.model import differences, expected_state, table_state
from tests.support import (
    ORDERVIEW,
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
    history = varied(seed, orders=(15, 10))
    faulty = with_faults(history, seed, duplicates=0.15, swaps=0.1, poison=6)
    unknown = dict(history.events[3], type="order.teleported", seq=999, id="unknown-type")
    return history.events, [*faulty.lines(random.Random(seed)), json.dumps(unknown)]


async def dead_letter_counts(client, settings: Settings) -> list[int]:
    return [await client.xlen(f"{s}:dlq") for s in settings.streams]


# A rebuild's sizes: its own, and tiny ones that make a short history span many windows, orders
# go out of memory (some while their row is still being written) and come back.
SIZES = [
    pytest.param({}, id="default-sizes"),
    pytest.param({"window": 7, "resident": 5}, id="tiny-windows"),
]


@pytest.mark.parametrize("sizes", SIZES)
async def test_a_rebuild_writes_what_the_live_projector_wrote_byte_for_byte(
    fresh, redis_client, sizes
):
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

    counts = await run_rebuild(settings, **sizes)

    assert await snapshot(pool) == live
    assert await dead_letter_counts(redis_client, settings) == dead  # nothing dead-lettered again
    assert counts["dead"] >= 2 and counts["duplicates"] > 0 and counts["poison"] == 6
    status = await rebuild_status(pool)
    assert status["rebuild"]["phase"] == "done" and not status["rebuild_running"]
    assert status["read_model_release"] == status["this_release"]
    schemas = {r[0] for r in await pool.fetch("SELECT nspname FROM pg_namespace")}
    assert not schemas & {NEXT_SCHEMA, OLD_SCHEMA}


@pytest.mark.parametrize("sizes", SIZES)
async def test_a_rebuild_equals_an_independent_fold_and_has_every_index(fresh, redis_client, sizes):
    env, pool = fresh
    settings = load_settings(env)
    events, lines = faulty_lines(12)
    await publish_lines(redis_client, settings, lines)
    migrated = await pool.fetch(INDEXES)

    await run_rebuild(settings, **sizes)

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


# ---- under load -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The read API in this process (its lifespan, its pool of prepared statements)."""
    edge = create_app(settings)
    async with edge.app.lifespan():
        transport = httpx.ASGITransport(app=edge)
        async with httpx.AsyncClient(transport=transport, base_url="http://orderview.test") as c:
            yield c


async def load(client, headers, ids, stop: asyncio.Event, failures: list, served: list) -> None:
    """Lists and gets of both dialects, one after the other, until `stop`."""
    rng = random.Random(len(failures))
    while not stop.is_set():
        oid = rng.choice(ids)
        for path in (V1, f"{V1}/{oid}?include=items,participant", V2, f"{V2}/ord_{oid}"):
            try:
                response = await client.get(path, headers=headers)
                ok = response.status_code == 200
            except Exception as exc:  # noqa: BLE001 - any failure counts
                response, ok = exc, False
            (served if ok else failures).append((path, response))


async def test_a_rebuild_under_load_fails_no_request_and_loses_no_event(fresh, redis_client):
    env, pool = fresh
    env = {**env, "ORDERVIEW_CURSOR_SECRET": "test-cursor-secret-0123456789"}
    settings = load_settings(env)
    history = varied(21, orders=(40, 25))
    lines = [json.dumps(e) for e in history.events]
    first, rest = lines[: len(lines) // 2], lines[len(lines) // 2 :]
    async with pool.acquire() as conn:
        _, key = await create_key(conn, "tenant-0", ["service_orders", "orders:read"])
        await set_feature(conn, "tenant-0", "service_orders", True)
    headers = {"Authorization": f"Bearer {key}"}
    failures: list = []
    served: list = []
    stop = asyncio.Event()
    async with projector(settings), api_client(settings) as client:
        await publish_lines(redis_client, settings, first)
        await wait_until_caught_up(redis_client, settings, timeout=60)
        ids = [r[0] for r in await pool.fetch(f"SELECT id FROM {ORDERS} WHERE tenant = 'tenant-0'")]
        readers = [asyncio.create_task(load(client, headers, ids, stop, failures, served))]
        rebuild = asyncio.create_task(asyncio.to_thread(run_orderview, env, "rebuild", "--yes"))
        for start in range(0, len(rest), 10):  # events keep arriving during the rebuild
            await publish_lines(redis_client, settings, rest[start : start + 10])
            await asyncio.sleep(0.02)
        done = await rebuild
        before_swap = len(served)
        assert before_swap > 0
        await wait_until_caught_up(redis_client, settings, timeout=60)
        for _ in range(1200):  # and the API keeps serving, on the new tables
            if len(served) >= before_swap + 200:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*readers)

        assert done.returncode == 0, done.stderr
        assert failures == []
        model = expected_state(history.events)
        problems: list[str] = []
        newest = ordered(expected_orders(model, "tenant-0"), lambda o: o["created_at"], True)
        got = await walk(client, V1, {"include": "items,participant", "limit": 7}, headers)
        compare(problems, "v1 list", [v1_doc(model, "tenant-0", i) for i in newest], got)
        got = await walk(client, V2, {"limit": 9}, headers)
        compare(problems, "v2 list", [v2_doc(model, "tenant-0", i) for i in newest], got)
        assert problems == []
    assert differences(model, await table_state(pool)) == []


async def test_statements_prepared_on_the_old_tables_read_the_new_ones_after_the_swap(
    fresh, redis_client
):
    env, pool = fresh
    settings = load_settings(env)
    events, lines = faulty_lines(15)
    await publish_lines(redis_client, settings, lines)
    async with pool.acquire() as conn:
        count = "SELECT count(*) FROM read_model.orders WHERE tenant = $1"
        for _ in range(6):  # prepared, and past PostgreSQL's switch to a generic plan
            assert await conn.fetchval(count, "tenant-0") == 0
        await run_rebuild(settings)
        assert await conn.fetchval(count, "tenant-0") == 15


# ---- killed -----------------------------------------------------------------------------------


async def wait_for_phase(pool: asyncpg.Pool, phase: str, proc) -> None:
    for _ in range(1200):
        status = await rebuild_status(pool)
        if status["rebuild"] and status["rebuild"]["phase"] == phase:
            return
        if proc.returncode is not None:
            raise AssertionError(f"the rebuild ended before phase {phase}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"the rebuild never reached phase {phase}")


async def waiting_on_a_lock(pool: asyncpg.Pool) -> None:
    for _ in range(1200):
        if await pool.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the rebuild never waited")


@contextlib.asynccontextmanager
async def locked(pool: asyncpg.Pool, sql: str) -> AsyncIterator[None]:
    """A lock held by a transaction of its own until the block ends."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(sql)
        yield


@pytest.mark.parametrize("phase", ["replay", "indexes", "swap"])
async def test_a_rebuild_killed_leaves_the_live_model_untouched_and_a_rerun_succeeds(
    fresh, redis_client, phase
):
    """The rebuild is held in a phase by a lock the test takes (the dead-letter ledger the replay
    reads, the table CREATE INDEX needs, the read-model lock the swap needs), then SIGKILLed."""
    env, pool = fresh
    settings = load_settings(env)
    events, lines = faulty_lines(16)
    async with projector(settings):
        await publish_lines(redis_client, settings, lines)
        await wait_until_caught_up(redis_client, settings, timeout=60)
    live = await snapshot(pool)
    async with contextlib.AsyncExitStack() as stack:
        ledger = contextlib.AsyncExitStack()
        await ledger.enter_async_context(
            locked(pool, "LOCK TABLE orderview.dead_letters IN ACCESS EXCLUSIVE MODE")
        )
        proc = await asyncio.create_subprocess_exec(
            ORDERVIEW, "rebuild", "--yes", env={**os.environ, **env},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        stack.push_async_callback(proc.wait)
        stack.callback(lambda: proc.returncode is None and proc.kill())
        await wait_for_phase(pool, "replay", proc)
        if phase == "indexes":
            lock = f"LOCK TABLE {NEXT_SCHEMA}.orders IN ROW EXCLUSIVE MODE"
            await stack.enter_async_context(locked(pool, lock))
        if phase == "swap":
            lock = f"SELECT pg_advisory_xact_lock_shared({READ_MODEL_LOCK})"
            await stack.enter_async_context(locked(pool, lock))
        if phase != "replay":
            await ledger.aclose()
        await wait_for_phase(pool, phase, proc)
        await waiting_on_a_lock(pool)
        proc.kill()
        await proc.wait()
        await ledger.aclose()

    assert await snapshot(pool) == live
    await run_rebuild(settings)
    assert await snapshot(pool) == live
    schemas = {r[0] for r in await pool.fetch("SELECT nspname FROM pg_namespace")}
    assert not schemas & {NEXT_SCHEMA, OLD_SCHEMA}
    assert (await rebuild_status(pool))["rebuild"]["phase"] == "done"


async def test_a_rerun_drops_the_old_schema_a_rebuild_killed_after_its_swap_left(
    fresh, redis_client
):
    env, pool = fresh
    await pool.execute(f"CREATE SCHEMA {OLD_SCHEMA}; CREATE TABLE {OLD_SCHEMA}.orders (id int)")
    await run_rebuild(load_settings(env))
    schemas = {r[0] for r in await pool.fetch("SELECT nspname FROM pg_namespace")}
    assert OLD_SCHEMA not in schemas


async def test_a_read_model_built_by_another_release_is_reported_at_start(fresh):
    env, pool = fresh
    assert await release.check(pool, "test") is True  # migrate recorded this release
    assert REGISTRY.get_sample_value("orderview_read_model_outdated") == 0
    await pool.execute(
        """COMMENT ON SCHEMA read_model IS '{"fingerprint": "0.0.1+000000000000"}'"""
    )
    assert await release.check(pool, "test") is False
    assert REGISTRY.get_sample_value("orderview_read_model_outdated") == 1
    status = await rebuild_status(pool)
    assert status["read_model_release"] == "0.0.1+000000000000" != status["this_release"]


async def test_a_gap_the_live_projector_holds_across_the_swap_is_applied_once_it_fills(
    fresh, redis_client
):
    env, pool = fresh
    settings = load_settings({**env, "ORDERVIEW_GAP_TIMEOUT": "600"})
    events, _ = faulty_lines(17)
    lines = [json.dumps(e) for e in events]
    late = next(i for i, e in enumerate(events) if e["seq"] == 2 and e["type"] != "order.created")
    held = [line for line in lines[late + 1 :] if _same_aggregate(json.loads(line), events[late])]
    async with projector(settings):
        await publish_lines(redis_client, settings, lines[:late] + lines[late + 1 :])
        await wait_until_caught_up(redis_client, settings, timeout=60, allowed=len(held))
        counts = await run_rebuild(settings)
        assert counts["held"] == len(held) > 0  # the rebuild holds them too, and leaves them
        await publish_lines(redis_client, settings, [lines[late]])
        await wait_until_caught_up(redis_client, settings, timeout=60)
    assert differences(expected_state(events), await table_state(pool)) == []


def _same_aggregate(a: dict, b: dict) -> bool:
    kind = a["type"].partition(".")[0] == b["type"].partition(".")[0]
    return kind and (a["tenant"], a["aggregate_id"]) == (b["tenant"], b["aggregate_id"])


async def test_status_shows_a_rebuild_in_progress_only_while_its_process_holds_the_lock(fresh):
    _, pool = fresh
    async with pool.acquire() as conn:
        rebuild = await rebuilds.start(conn, "orders:events", 10)
        await rebuilds.update(conn, rebuild, "replay", 4, 2.0)
        assert await rebuild_in_progress(conn) == []  # its process is gone: killed
        assert (await rebuild_status(conn))["rebuild"]["phase"] == "killed"
        await conn.execute("SELECT pg_advisory_lock($1)", REBUILD_LOCK)
        (shown,) = await rebuild_in_progress(conn)
        assert (shown["phase"], shown["position"], shown["rate"]) == ("replay", 4, 2.0)
        await conn.execute("SELECT pg_advisory_unlock($1)", REBUILD_LOCK)


async def test_the_swap_tells_every_api_process_to_empty_its_document_cache(fresh, redis_client):
    env, pool = fresh
    heard: list[str] = []

    def hear(*args) -> None:
        heard.append(args[-1])

    async with pool.acquire() as conn:
        await conn.add_listener(CHANNEL, hear)
        await run_rebuild(load_settings(env))
        for _ in range(100):
            if "{}" in heard:
                break
            await asyncio.sleep(0.05)
        await conn.remove_listener(CHANNEL, hear)
    assert "{}" in heard
