"""orderview on a Redis Cluster (ORDERVIEW_REDIS_CLUSTER=true): 3 masters and 3 replicas on
loopback, 8 hash-tagged shards spread over the masters, real `orderview` processes.

Projectors SIGKILLed mid-batch; a manual CLUSTER FAILOVER of a shard's master while events flow
and the API serves; a master SIGKILLed outright. Each compared with the independent fold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import asyncpg
import httpx
import pytest

from orderview.db import create_redis
from orderview.settings import load_settings
from projections.events import stream_for
from projections.failures import REDIS_UNAVAILABLE
from projections.tables import ORDERS, PARTICIPANTS
from services.api.keys import create_key, set_feature
from services.histories import varied, with_faults
from tests.chaos import ApiProcess, Replicas, Traffic
from tests.cluster import wait_for
from tests.conftest import create_database, drop_database
from tests.integration.test_crash import crash_run
from tests.model import differences, expected_state, table_state
from tests.support import (
    dead_letters,
    projector,
    publish_lines,
    run_orderview,
    wait_until_caught_up,
)

SHARDS = 8
TENANT = "tenant-0"


def shards(tag: str) -> list[str]:
    """The shard keys of one test, each its own hash tag: `{tag:orders:events:i}`."""
    return [f"{{{tag}:orders:events:{i}}}" for i in range(SHARDS)]


def on_cluster(env: dict[str, str], cluster, tag: str) -> dict[str, str]:
    return {
        **env,
        "ORDERVIEW_REDIS_URL": cluster.url,
        "ORDERVIEW_REDIS_CLUSTER": "true",
        "ORDERVIEW_STREAMS": ",".join(shards(tag)),
    }


@pytest.fixture
async def cluster_client(redis_cluster) -> AsyncIterator:
    client = create_redis(redis_cluster.url, cluster=True)
    yield client
    await client.aclose()


def test_a_stream_without_a_hash_tag_stops_a_cluster_process_at_start_naming_the_variable(
    subprocess_env, redis_cluster
):
    env = {**on_cluster(subprocess_env, redis_cluster, "x"), "ORDERVIEW_STREAMS": "orders:events:0"}
    done = run_orderview(env, "projector")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "orderview: ORDERVIEW_STREAMS is malformed: 'orders:events:0' has no hash tag, which "
        "ORDERVIEW_REDIS_CLUSTER=true needs (name it {orders:events:0})"
    ]


async def test_publish_routes_every_event_to_its_shard_and_the_shards_spread_over_every_master(
    subprocess_env, redis_cluster, cluster_client, tmp_path
):
    env = on_cluster(subprocess_env, redis_cluster, "publish")
    history = varied(3, orders=300)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(history.lines()) + "\n")
    done = run_orderview(env, "publish", str(path))
    assert done.returncode == 0, done.stderr
    streams = tuple(shards("publish"))
    routed = Counter(
        stream_for(streams, e["tenant"], e["type"].split(".")[0], e["aggregate_id"])
        for e in history.events
    )
    assert {s: await cluster_client.xlen(s) for s in streams} == {s: routed[s] for s in streams}
    masters = {redis_cluster.master_of(s).port for s in streams}
    assert len(masters) == 3, masters


@pytest.mark.slow
async def test_projectors_killed_mid_batch_on_a_cluster_leave_the_tables_of_an_independent_fold(
    env, pool, redis_cluster, cluster_client
):
    await crash_run(
        on_cluster(env, redis_cluster, "crash"),
        pool,
        cluster_client,
        replicas=3,
        shards=SHARDS,
        kills=10,
        seed=803,
        orders=4000,  # twice the default: 24 consumers drain a history fast
        name=lambda i: shards("crash")[i],
    )


# ---- failovers while events flow --------------------------------------------------------------


class Producer:
    """Publishes lines in slices over about `seconds`, as a producer would: a slice that fails
    (the cluster is electing a new master) is sent again, so an event may be published twice."""

    def __init__(self, client, settings, lines: list[str], seconds: float):
        self.client, self.settings, self.lines, self.seconds = client, settings, lines, seconds
        self.retries = 0

    async def run(self) -> None:
        from tests.support import publish_lines

        slices = max(1, int(self.seconds / 0.1))
        size = -(-len(self.lines) // slices)
        for i in range(0, len(self.lines), size):
            while True:
                try:
                    await publish_lines(self.client, self.settings, self.lines[i : i + size])
                    break
                except REDIS_UNAVAILABLE:
                    self.retries += 1
                    await asyncio.sleep(0.2)
            await asyncio.sleep(0.1)


async def surviving_lines(client, streams) -> Counter[str]:
    """Every `event` value still in the streams."""
    found: Counter[str] = Counter()
    for stream in streams:
        for _, fields in await client.xrange(stream):
            found[fields[b"event"].decode()] += 1
    return found


@contextlib.asynccontextmanager
async def under_fault(env, pool, cluster, client, *, tag: str, seed: int, fault: Callable):
    """3 projectors and an API with traffic while events flow; `fault(cluster, shard_0)` runs in
    a thread once the flow is under way. Returns (history, settings, traffic, producer)."""
    env = {**on_cluster(env, cluster, tag), "ORDERVIEW_BATCH_SIZE": "100",
           "ORDERVIEW_CLAIM_IDLE_MS": "3000", "ORDERVIEW_GAP_TIMEOUT": "600",
           "ORDERVIEW_LOG_LEVEL": "WARNING", "ORDERVIEW_KEY_CACHE_SECONDS": "1"}  # fmt: skip
    settings = load_settings(env)
    base = varied(seed, orders=1500)
    history = with_faults(base, seed, duplicates=0.05, swaps=0.05, poison=12)
    async with pool.acquire() as db, db.transaction():
        _, key = await create_key(db, TENANT, ["orders:read", "service_orders"])
        await set_feature(db, TENANT, "service_orders", True)
    full = {**os.environ, **env}
    group, api = Replicas(full, 3), ApiProcess(full)
    producer = Producer(client, settings, history.lines(random.Random(seed)), seconds=10)
    try:
        await api.ready()
        async with Traffic(api.base, {"Authorization": f"Bearer {key}"}) as traffic:
            publishing = asyncio.create_task(producer.run())
            await asyncio.sleep(3)
            traffic.phase = "fault"
            await asyncio.to_thread(fault, cluster, settings.streams[0])
            traffic.phase = "after"
            await publishing
            yield history, settings, traffic, producer
            dead = {n: p.returncode for n, p in group.procs.items() if p.poll() is not None}
            assert dead == {}, f"projectors stopped: {dead}\n{group.logs()}"
            metrics = (await traffic.client.get("/metrics")).text
            assert "orderview_api_redis_up 1.0" in metrics, metrics[-2000:]
    except BaseException:
        print(f"\nprojector logs:\n{group.logs()}\napi log:\n{api.logs()}")
        raise
    finally:
        codes = group.stop_all()
        group.close()
        assert api.stop() == 0
    assert set(codes.values()) == {0}, codes
    statuses = Counter(status for (_, status) in traffic.seen.elements())
    assert traffic.failures == [] and set(statuses) == {200}, (traffic.failures, statuses)
    print(f"\n{tag}: {len(history.events)} events, {producer.retries} slices sent again, "
          f"requests by phase and status {dict(traffic.seen)}")  # fmt: skip


def manual_failover(cluster, stream: str) -> None:
    master = cluster.master_of(stream)
    replica = cluster.replica_of(master)
    cluster.failover(replica)
    assert cluster.master_of(stream) == replica


@pytest.mark.slow
async def test_a_manual_failover_of_a_shards_master_loses_and_doubles_nothing_and_no_caller_sees_it(
    env, pool, redis_cluster, cluster_client
):
    faults = under_fault(
        env, pool, redis_cluster, cluster_client, tag="failover", seed=61, fault=manual_failover
    )
    async with faults as (history, settings, _, _):
        await settled(cluster_client, settings)
        assert differences(expected_state(history.events), await table_state(pool)) == []
        letters = []
        for stream in settings.streams:
            letters += await dead_letters(cluster_client, stream)
        assert Counter(d["event"] for d in letters) == Counter(history.poison)


def kill_master(cluster, stream: str) -> None:
    """SIGKILL the master of `stream` (never the node clients start from), wait for its replica
    to take over."""
    master = cluster.master_of(stream)
    if master is cluster.entry:  # keep the URL's node: restarted processes start from it
        cluster.failover(cluster.replica_of(master))
        master = cluster.master_of(stream)
    replica = cluster.replica_of(master)
    cluster.kill(master)
    started = time.monotonic()
    wait_for(lambda: cluster.master_of(stream) == replica, 60, "the replica to take over")
    cluster.wait_healthy()
    print(f"\nreplica {replica.address} took over after {time.monotonic() - started:.1f} s")


@pytest.mark.slow
async def test_a_killed_master_never_stops_the_projector_nor_makes_it_apply_anything_twice(
    env, pool, redis_cluster, cluster_client
):
    faults = under_fault(
        env, pool, redis_cluster, cluster_client, tag="kill", seed=67, fault=kill_master
    )
    async with faults as (history, settings, _, _):
        survived = await surviving_lines(cluster_client, settings.streams)
        deadline = time.monotonic() + 180
        while True:
            events = folded_once(history.events, survived, await applied_seqs(pool))
            diff = differences(expected_state(events), await table_state(pool))
            if not diff and await undelivered(cluster_client, settings) == 0:
                break
            assert time.monotonic() < deadline, diff[:10]
            await asyncio.sleep(0.2)
        lost = [e for e in history.events if json.dumps(e) not in survived]
        late = [e for e in lost if e not in events]
        print(f"events lost with the master: {len(lost)}, of which applied before the loss: "
              f"{len(lost) - len(late)}; entries not in the streams: "
              f"{sum((Counter(history.lines()) - survived).values())}")  # fmt: skip


def folded_once(events: list[dict], survived: Counter[str], applied: dict[tuple, int]):
    """The events the tables must hold, once each and in seq order: every event still in the
    streams, and those Redis lost after the projector had applied them (seq <= the applied seq
    of its aggregate). The rest of the lost ones are lost to every reader."""
    return [
        e for e in events
        if json.dumps(e) in survived or e["seq"] <= applied.get(_aggregate(e), 0)
    ]  # fmt: skip


def _aggregate(e: dict) -> tuple:
    return (e["tenant"], e["type"].split(".")[0], e["aggregate_id"])


async def applied_seqs(pool) -> dict[tuple, int]:
    """The last applied seq of every aggregate, from the read tables."""
    seqs = {}
    for table, kind in ((ORDERS, "order"), (PARTICIPANTS, "participant")):
        for r in await pool.fetch(f"SELECT tenant, id, seq FROM {table} WHERE seq > 0"):
            seqs[(r["tenant"], kind, r["id"])] = r["seq"]
    return seqs


async def undelivered(client, settings, pending: bool = False) -> int:
    """Entries after the group's last-delivered id (plus its pending ones), over every stream.

    Not XINFO GROUPS `lag`: before redis/redis#12898 (Redis 7.0, 7.2.0-7.2.3) a replica's
    entries-read drifts from its master's, so after a failover `lag` stays too high for good."""
    total = 0
    for stream in settings.streams:
        (group,) = await client.xinfo_groups(stream)
        after = await client.xrange(stream, min=b"(" + group["last-delivered-id"], count=100_000)
        total += len(after) + (group["pending"] if pending else 0)
    return total


async def settled(client, settings, timeout: float = 180) -> None:
    """Wait until every entry is delivered and acknowledged."""
    deadline = time.monotonic() + timeout
    while (left := await undelivered(client, settings, pending=True)) > 0:
        assert time.monotonic() < deadline, f"not settled after {timeout:g}s: {left} left"
        await asyncio.sleep(0.1)


def test_status_and_dlq_list_read_every_shard_of_a_cluster(subprocess_env, redis_cluster):
    env = on_cluster(subprocess_env, redis_cluster, "ops")
    status = run_orderview(env, "status", "--json")
    assert status.returncode in (0, 1), status.stderr  # 1: no live consumer, as here
    assert all(stream in status.stdout for stream in shards("ops")), status.stdout
    listed = run_orderview(env, "dlq", "list", "--json")
    assert listed.returncode == 0, listed.stderr


async def test_a_write_read_with_x_min_position_always_shows_on_a_cluster(
    subprocess_env, redis_cluster, cluster_client, pool
):
    # The projector announces after its XACK with a plain PUBLISH (a cluster client refuses one in
    # a pipeline); the API hears it on one node's connection and reads each shard's watermark.
    env = on_cluster(subprocess_env, redis_cluster, "ryw")
    settings = load_settings(env)
    async with pool.acquire() as db:
        _, key = await create_key(db, "ryw", ["orders:read"])
    full = {**os.environ, **env}
    group, api = Replicas(full, 1), ApiProcess(full)
    try:
        await api.ready()
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=api.base, headers=auth, timeout=10) as client:
            for order in range(1, 41):
                stream = stream_for(settings.streams, "ryw", "order", order)
                event = {"id": f"ryw-{order}", "type": "order.created", "tenant": "ryw",
                         "aggregate_id": order, "seq": 1, "at": "2024-05-01T10:00:00Z",
                         "data": {"type": "sale", "currency": "EUR"}}  # fmt: skip
                entry = (await cluster_client.xadd(stream, {"event": json.dumps(event)})).decode()
                response = await client.get(
                    f"/v1/orders/ord_{order}", headers={"X-Min-Position": f"{stream}@{entry}"}
                )
                assert response.status_code == 200, (order, response.text, api.logs())
    finally:
        codes = group.stop_all()
        group.close()
        assert api.stop() == 0
    assert set(codes.values()) == {0}, codes


async def test_rebuild_and_dlq_replay_work_on_every_shard_of_a_cluster(
    servers, subprocess_env, redis_cluster, cluster_client
):
    # Its own database: a rebuild swaps the whole read model.
    url = await asyncio.to_thread(
        create_database,
        servers[0],
        f"orderview_cluster_ops_{os.getpid()}_{random.randrange(10**6)}",
    )
    env = {**on_cluster(subprocess_env, redis_cluster, "cops"), "ORDERVIEW_DATABASE_URL": url,
           "ORDERVIEW_GAP_TIMEOUT": "600"}  # fmt: skip
    settings = load_settings(env)
    try:
        assert (await asyncio.to_thread(run_orderview, env, "migrate")).returncode == 0
        history = varied(11, orders=120)
        lines = with_faults(history, 11, duplicates=0.1, swaps=0.0, poison=5).lines(
            random.Random(11)
        )
        await publish_lines(cluster_client, settings, lines)
        async with projector(settings):
            await wait_until_caught_up(cluster_client, settings, timeout=120)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            live = [dict(r) for r in await pool.fetch(f"SELECT * FROM {ORDERS} ORDER BY 1, 2")]
            assert len(live) == 2 * 120

            # dlq list reads every shard's dead letters; replaying one appends it to its shard.
            listed = await asyncio.to_thread(run_orderview, env, "dlq", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            letters = [json.loads(line) for line in listed.stdout.splitlines()]
            assert len(letters) == 5 and {d["stream"] for d in letters} <= set(settings.streams)
            one = letters[0]
            length = await cluster_client.xlen(one["stream"])
            replay = await asyncio.to_thread(
                run_orderview, env, "dlq", "replay", "--stream", one["stream"], one["entry_id"]
            )
            assert replay.returncode == 0, replay.stderr
            assert await cluster_client.xlen(one["stream"]) == length + 1
            (new_id,) = [f for f in (await cluster_client.xrevrange(one["stream"], count=1))]
            assert new_id[0].decode() in replay.stdout

            # A rebuild reads every shard from its first entry and swaps in the same read model.
            rebuilt = await asyncio.to_thread(run_orderview, env, "rebuild", "--yes")
            assert rebuilt.returncode == 0, rebuilt.stderr
            after = [dict(r) for r in await pool.fetch(f"SELECT * FROM {ORDERS} ORDER BY 1, 2")]
            assert after == live
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(drop_database, servers[0], url)
