"""`orderview status` against running, stopped, killed and sharded projectors."""

from __future__ import annotations

import asyncio
import json
import signal

import asyncpg
import pytest

from orderview.settings import load_settings
from tests.conftest import create_database, drop_database
from tests.support import ORDERVIEW, projector, publish_lines, run_orderview, wait_until_caught_up

CREATED = {"type": "sale", "currency": "EUR", "items": []}


def ev(agg: int, seq: int = 1, minute: int = 1) -> str:
    return json.dumps({"id": f"e-{agg}-{seq}", "type": "order.created" if seq == 1 else "order.confirmed", "tenant": "acme", "aggregate_id": agg, "seq": seq, "at": f"2024-01-01T00:{minute:02d}:00Z", "data": CREATED if seq == 1 else {}})  # fmt: skip


def status(env: dict[str, str]) -> tuple[int, dict]:
    done = run_orderview(env, "status", "--json")
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


async def status_until(env: dict[str, str], check, timeout: float = 30) -> tuple[int, dict]:
    """Run `status --json` until `check(code, doc)` holds (statistics and heartbeats lag a
    few seconds by design)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        code, doc = await asyncio.to_thread(status, env)
        if check(code, doc) or asyncio.get_running_loop().time() > deadline:
            return code, doc
        await asyncio.sleep(0.5)


async def test_a_running_projector_is_live_and_status_shows_streams_dead_letters_and_rows(
    subprocess_env, settings, pool, redis_client
):
    stream = settings.streams[0]
    async with projector(settings):
        await publish_lines(redis_client, settings, [ev(1), ev(2), ev(3, minute=9), "not json"])
        await wait_until_caught_up(redis_client, settings)
        code, doc = await status_until(
            subprocess_env,
            lambda c, d: (
                d["read_model"]["orders_about"] == 3
                and d["read_model"]["last_applied_at"] is not None
            ),
        )
        text = run_orderview(subprocess_env, "status")
    assert code == 0 and doc["ok"] is True
    (s,) = doc["streams"]
    assert (s["stream"], s["length"], s["lag"], s["pending"]) == (stream, 4, 0, 0)
    assert s["dead_letters_waiting"] == {"poison": 1} and s["dead_letter_stream_length"] == 1
    assert [(c["name"], c["state"], c["live"]) for c in s["consumers"]] == [
        ("test-consumer", "live", True)
    ]
    assert doc["read_model"]["last_event_at"].startswith("2024-01-01T00:09:00")
    assert doc["rebuild"] == []  # the table exists (0007_rebuilds); no rebuild runs
    assert text.returncode == 0
    assert "about 3" in text.stdout and "poison 1" in text.stdout and "live" in text.stdout
    release = doc["release"]  # `orderview migrate` recorded this release on the read model
    assert release["read_model"] == release["this_release"] and release["rebuild_due"] is False
    assert f"built by      release {release['this_release']}" in text.stdout
    assert "run `orderview rebuild`" not in text.stdout


async def test_a_stopped_projector_leaves_its_stream_without_a_live_consumer_exit_1(
    subprocess_env, settings, pool, redis_client
):
    async with projector(settings):
        await publish_lines(redis_client, settings, [ev(1)])
        await wait_until_caught_up(redis_client, settings)
    code, doc = status(subprocess_env)
    assert code == 1 and doc["ok"] is False
    assert [(c["name"], c["state"]) for c in doc["streams"][0]["consumers"]] == [
        ("test-consumer", "stopped")
    ]
    text = run_orderview(subprocess_env, "status")
    assert text.returncode == 1
    assert text.stdout.splitlines()[-1] == f"no live consumer: {settings.streams[0]}"


async def test_a_stream_no_projector_reads_is_reported_in_a_sharded_setup(
    subprocess_env, stream_prefix, pool, redis_client
):
    shards = [f"{stream_prefix}:orders:{i}" for i in range(3)]
    read = {**subprocess_env, "ORDERVIEW_STREAMS": ",".join(shards[:2])}
    settings = load_settings(read)
    async with projector(settings):
        await publish_lines(redis_client, settings, [ev(i) for i in range(1, 21)])
        await wait_until_caught_up(redis_client, settings)
        code, doc = await status_until(read, lambda c, d: c == 0)
        assert code == 0
        assert sum(s["length"] for s in doc["streams"]) == 20
        assert all(s["length"] > 0 and s["live_consumers"] == 1 for s in doc["streams"])
        every = {**subprocess_env, "ORDERVIEW_STREAMS": ",".join(shards)}
        code, doc = status(every)
    assert code == 1
    assert [(s["stream"], s["group"], s["live_consumers"]) for s in doc["streams"]] == [
        (shards[0], True, 1),
        (shards[1], True, 1),
        (shards[2], False, 0),
    ]


@pytest.mark.slow
async def test_a_killed_projector_falls_silent_and_status_exits_1(
    subprocess_env, settings, pool, redis_client
):
    proc = await asyncio.create_subprocess_exec(ORDERVIEW, "projector", env=subprocess_env)
    try:
        code, doc = await status_until(subprocess_env, lambda c, d: c == 0)
        assert code == 0, doc
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    code, doc = await status_until(subprocess_env, lambda c, d: c == 1, timeout=60)
    assert code == 1
    assert [c["state"] for c in doc["streams"][0]["consumers"]] == ["silent"]


@pytest.mark.parametrize("args", [("status",), ("dlq", "list")], ids=["status", "dlq"])
def test_an_unmigrated_database_is_one_line_asking_for_migrate_exit_2(
    servers, subprocess_env, stream_prefix, args
):
    url = create_database(servers[0], f"orderview_unmigrated_{stream_prefix.replace(':', '_')}")
    try:
        done = run_orderview({**subprocess_env, "ORDERVIEW_DATABASE_URL": url}, *args)
    finally:
        drop_database(servers[0], url)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "not migrated" in done.stderr and "orderview migrate" in done.stderr


@pytest.mark.parametrize(
    ("args", "start"),
    [(("status",), "status unavailable"), (("dlq", "list"), "dlq list failed")],
    ids=["status", "dlq"],
)
def test_an_unreachable_database_is_one_line_exit_2(subprocess_env, args, start):
    env = {**subprocess_env, "ORDERVIEW_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"}
    done = run_orderview(env, *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"orderview: {start}: ConnectionRefusedError")


def test_a_read_model_built_by_another_release_says_a_rebuild_is_due(
    servers, subprocess_env, stream_prefix
):
    url = create_database(servers[0], f"orderview_oldrelease_{stream_prefix.replace(':', '_')}")
    env = {**subprocess_env, "ORDERVIEW_DATABASE_URL": url}
    try:
        assert run_orderview(env, "migrate").returncode == 0
        _admin_sql(url, """COMMENT ON SCHEMA read_model IS '{"fingerprint": "0.0.1+0000"}'""")
        code, doc = status(env)
        text = run_orderview(env, "status")
    finally:
        drop_database(servers[0], url)
    assert doc["release"]["read_model"] == "0.0.1+0000"
    assert doc["release"]["rebuild_due"] is True
    assert "built by      release 0.0.1+0000" in text.stdout
    assert f"this release is {doc['release']['this_release']}: run `orderview rebuild`" in (
        text.stdout
    )


def _admin_sql(url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())
