"""The projector against real Redis and PostgreSQL: duplicates, gaps, poison, fan-out, shards."""

from __future__ import annotations

import json
import subprocess

import msgspec
import pytest

from orderview.settings import load_settings
from projections.tables import ORDERS
from services.histories import poison_entries, varied, with_faults
from tests.model import differences, expected_state, table_state
from tests.support import (
    ORDERVIEW,
    dead_letters,
    orders_v2,
    project,
    projector,
    publish_lines,
    run_orderview,
    service_orders,
    wait_until_caught_up,
)


def ev(
    type_: str,
    agg: int,
    seq: int,
    data: dict | None = None,
    tenant: str = "acme",
    at: str | None = None,
) -> str:
    at = at or f"2024-01-01T00:{seq:02d}:00Z"
    return json.dumps({"id": f"{type_}-{agg}-{seq}", "type": type_, "tenant": tenant, "aggregate_id": agg, "seq": seq, "at": at, "data": data or {}})  # fmt: skip


CREATED = {"type": "sale", "currency": "EUR", "participant_id": 7, "items": [{"id": 1, "name": "x", "quantity": 2, "unit_price": "10.00", "tax_rate": "0.1"}]}  # fmt: skip
POISON = poison_entries("acme")  # one entry of each kind the projector dead-letters


async def test_a_random_history_with_duplicates_and_reorderings_matches_the_independent_model(
    settings, pool, redis_client
):
    history = with_faults(varied(11, tenants=3, orders=60), 5, duplicates=0.2, swaps=0.1)
    await project(redis_client, settings, history.lines())
    assert differences(expected_state(history.events), await table_state(pool)) == []


async def test_a_gap_is_held_then_applied_when_its_predecessor_arrives(
    settings, pool, redis_client
):
    async with projector(settings):
        await publish_lines(
            redis_client,
            settings,
            [ev("order.created", 1, 1, CREATED), ev("order.confirmed", 1, 3)],
        )
        await wait_until_caught_up(redis_client, settings, allowed=1)
        assert (await pool.fetchval(f"SELECT status FROM {ORDERS} WHERE id = 1")) == "draft"
        await publish_lines(redis_client, settings, [ev("order.submitted", 1, 2)])
        await wait_until_caught_up(redis_client, settings)
    row = await pool.fetchrow(f"SELECT status, seq, submitted_at FROM {ORDERS} WHERE id = 1")
    assert (row["status"], row["seq"]) == ("confirmed", 3) and row["submitted_at"] is not None
    assert await dead_letters(redis_client, settings.streams[0]) == []


async def test_a_gap_still_open_after_the_timeout_is_dead_lettered_with_reason_gap(
    env, pool, redis_client
):
    settings = load_settings({**env, "ORDERVIEW_GAP_TIMEOUT": "0.5"})
    lines = [ev("order.created", 1, 1, CREATED), ev("order.confirmed", 1, 3)]
    await project(redis_client, settings, lines)
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert [d["event"] for d in dlq] == [lines[1]]
    assert dlq[0] == {
        "event": lines[1],
        "error": "gap",
        "stream": settings.streams[0],
        "entry_id": dlq[0]["entry_id"],
    }
    assert (await redis_client.xrange(settings.streams[0]))[1][0].decode() == dlq[0]["entry_id"]
    assert (await pool.fetchval(f"SELECT seq FROM {ORDERS} WHERE id = 1")) == 1


async def test_every_poison_case_lands_in_the_dlq_with_a_readable_error_and_good_events_apply(
    settings, pool, redis_client
):
    good = [ev("order.created", 1, 1, CREATED), ev("order.confirmed", 1, 2)]
    lines = [good[0], *POISON, good[1]]
    await publish_lines(redis_client, settings, lines)
    await redis_client.xadd(settings.streams[0], {"other": "no event field"})
    async with projector(settings):
        await wait_until_caught_up(redis_client, settings)
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert sorted(d["event"] for d in dlq) == sorted([*POISON, ""])
    for entry in dlq:
        assert (
            len(entry["error"]) > 10
            and entry["entry_id"]
            and entry["stream"] == settings.streams[0]
        )
    assert (await pool.fetchval(f"SELECT status FROM {ORDERS} WHERE id = 1")) == "confirmed"


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(ev("order.created", 2, 1, CREATED, tenant="acme\n"), id="tenant"),
        pytest.param(ev("order.created", 2, 1, {**CREATED, "currency": "EUR\n"}), id="currency"),
        pytest.param(ev("order.created", 2, 1, {**CREATED, "type": "sale\n"}), id="order-type"),
        pytest.param(
            ev("order.payment_status_changed", 1, 2, {"payment_status": "paid\n"}),
            id="payment-status",
        ),
    ],
)
async def test_a_value_with_a_trailing_newline_does_not_match_its_pattern_and_is_poison(
    settings, pool, redis_client, line
):
    await project(redis_client, settings, [ev("order.created", 1, 1, CREATED), line])
    assert [d["event"] for d in await dead_letters(redis_client, settings.streams[0])] == [line]
    rows = await pool.fetch(f"SELECT tenant, id, seq, payment_status FROM {ORDERS}")
    assert [tuple(r) for r in rows] == [("acme", 1, 1, "pending")]


async def project_keeping_on(redis_client, settings, lines) -> None:
    """Project lines with poison among them; the projector must still be running after them."""
    async with projector(settings) as task:
        await publish_lines(redis_client, settings, lines)
        await wait_until_caught_up(redis_client, settings, timeout=10)
        assert not task.done()


@pytest.mark.parametrize(
    "at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"], ids=["min", "max"]
)
async def test_a_timestamp_outside_the_utc_range_is_poison_and_the_projector_keeps_going(
    settings, pool, redis_client, at
):
    lines = [
        ev("order.created", 1, 1, CREATED, at=at),
        ev("order.created", 2, 1, {**CREATED, "scheduled_at": at}),
        ev("order.created", 3, 1, CREATED),
    ]
    await project_keeping_on(redis_client, settings, lines)
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert sorted(d["event"] for d in dlq) == sorted(lines[:2])
    assert [r[0] for r in await pool.fetch(f"SELECT id FROM {ORDERS}")] == [3]


@pytest.mark.parametrize("where", ["envelope", "data"])
async def test_invalid_utf8_inside_a_json_string_is_poison_and_the_projector_keeps_going(
    settings, pool, redis_client, where
):
    bad = ev("participant.upserted", 7, 1, {"name": "Ann"}).encode()
    bad = bad.replace(b'"Ann"', b'"A\xffnn"') if where == "data" else bad.replace(b"acme", b"a\xc3")
    lines = [bad, ev("order.created", 1, 1, CREATED)]
    await project_keeping_on(redis_client, settings, lines)
    entries = await redis_client.xrange(settings.streams[0] + ":dlq")
    assert [f[b"event"] for _, f in entries] == [bad]
    assert b"UTF-8" in entries[0][1][b"error"]
    assert [r[0] for r in await pool.fetch(f"SELECT id FROM {ORDERS}")] == [1]


async def test_json_nested_too_deeply_to_decode_is_poison_and_the_projector_keeps_going(
    settings, pool, redis_client
):
    deep = "[" * 5000 + "]" * 5000
    lines = [
        ev("order.created", 1, 1, CREATED)[:-1] + f', "extra": {deep}}}',
        ev("order.created", 2, 1, {**CREATED, "extra": "X"}).replace('"X"', deep),
        ev("order.created", 3, 1, CREATED),
    ]
    await project_keeping_on(redis_client, settings, lines)
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert sorted(d["event"] for d in dlq) == sorted(lines[:2])
    assert all("nested too deeply" in d["error"] for d in dlq)
    assert [r[0] for r in await pool.fetch(f"SELECT id FROM {ORDERS}")] == [3]


async def test_an_order_created_before_its_participant_shows_the_participant_once_it_arrives(
    settings, pool, redis_client
):
    async with projector(settings):
        await publish_lines(redis_client, settings, [ev("order.created", 1, 1, CREATED)])
        await wait_until_caught_up(redis_client, settings)
        before = (await service_orders(pool, "acme"))[1]
        assert before["participant"] is None and before["event_participant_id"] == 7
        await publish_lines(
            redis_client,
            settings,
            [ev("participant.upserted", 7, 1, {"name": "Ann", "email": "a@x"})],
        )
        await wait_until_caught_up(redis_client, settings)
    after = (await service_orders(pool, "acme"))[1]
    assert after["participant"] == {"id": 7, "name": "Ann", "email": "a@x"}


async def test_an_unknown_participant_type_as_first_event_leaves_the_order_without_participant(
    settings, pool, redis_client
):
    lines = [ev("order.created", 1, 1, CREATED), ev("participant.merged", 7, 1, {"into": 8})]
    await project(redis_client, settings, lines)
    doc = (await service_orders(pool, "acme"))[1]
    assert doc["participant"] is None and doc["event_participant_id"] == 7
    v2 = (await orders_v2(pool, "acme"))[1]
    assert (v2["customerId"], v2["customerName"], v2["customerEmail"]) == ("cust_7", None, None)
    await project(
        redis_client, settings, [ev("participant.upserted", 7, 2, {"name": "Ann", "email": None})]
    )
    doc = (await service_orders(pool, "acme"))[1]
    assert doc["participant"] == {"id": 7, "name": "Ann", "email": None}


async def test_a_rename_reaches_every_order_of_the_participant_in_both_dialects(
    settings, pool, redis_client
):
    lines = [ev("participant.upserted", 7, 1, {"name": "Ann", "email": "a@x"})]
    lines += [ev("order.created", i, 1, CREATED) for i in range(1, 6)]
    lines += [ev("order.created", 9, 1, {**CREATED, "participant_id": 8})]
    lines += [ev("participant.upserted", 7, 2, {"name": "Ann Lee", "email": None})]
    await project(redis_client, settings, lines)
    docs = await service_orders(pool, "acme")
    assert {docs[i]["participant"]["name"] for i in range(1, 6)} == {"Ann Lee"}
    assert docs[9]["participant"] is None
    rows = await pool.fetch(f"SELECT customer_v2 FROM {ORDERS} WHERE participant_id = 7")
    assert {r[0] for r in rows} == {b'"customerName":"Ann Lee","customerEmail":null'}


async def test_the_same_ids_in_two_tenants_are_two_different_orders(settings, pool, redis_client):
    lines = [
        ev("order.created", 1, 1, CREATED, tenant="a"),
        ev("order.created", 1, 1, {**CREATED, "currency": "USD"}, tenant="b"),
    ]
    await project(redis_client, settings, lines)
    rows = await pool.fetch(f"SELECT tenant, currency FROM {ORDERS} ORDER BY tenant")
    assert [tuple(r) for r in rows] == [("a", "EUR"), ("b", "USD")]


async def test_sharded_streams_are_all_read_and_each_aggregate_stays_on_its_shard(
    env, pool, redis_client
):
    streams = ",".join(f"{env['ORDERVIEW_STREAMS']}:{i}" for i in range(4))
    settings = load_settings({**env, "ORDERVIEW_STREAMS": streams})
    history = varied(3, orders=40)
    await project(redis_client, settings, history.lines())
    lengths = [await redis_client.xlen(s) for s in settings.streams]
    assert all(n > 0 for n in lengths) and sum(lengths) == len(history.events)
    assert differences(expected_state(history.events), await table_state(pool)) == []


async def test_an_event_published_before_the_group_exists_is_applied(settings, pool, redis_client):
    await publish_lines(redis_client, settings, [ev("order.created", 1, 1, CREATED)])
    assert await redis_client.exists(settings.streams[0])
    async with projector(settings):
        await wait_until_caught_up(redis_client, settings)
    assert await pool.fetchval(f"SELECT count(*) FROM {ORDERS}") == 1


async def test_a_value_postgresql_refuses_is_dead_lettered_and_the_rest_of_the_batch_applies(
    settings, pool, redis_client
):
    # 1000 distinct four-byte characters: valid per the contract, too wide for a btree entry.
    wide = {**CREATED, "order_number": "".join(chr(0x20000 + i * 37) for i in range(1000))}
    lines = [
        ev("order.created", 1, 1, CREATED),
        ev("order.created", 2, 1, wide),
        ev("order.created", 3, 1, CREATED),
    ]
    await project(redis_client, settings, lines)
    assert sorted(r[0] for r in await pool.fetch(f"SELECT id FROM {ORDERS}")) == [1, 3]
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert [d["event"] for d in dlq] == [lines[1]] and "refused by database" in dlq[0]["error"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("ORDERVIEW_BATCH_SIZE", "many", id="not-a-number"),
        pytest.param("ORDERVIEW_BATCH_SIZE", "0", id="out-of-range"),
        pytest.param("ORDERVIEW_GAP_TIMEOUT", "-1", id="negative-timeout"),
        pytest.param("ORDERVIEW_LOG_LEVEL", "LOUD", id="unknown-level"),
        pytest.param("ORDERVIEW_DATABASE_URL", "127.0.0.1:5432/test", id="dsn-without-scheme"),
        pytest.param(
            "ORDERVIEW_DATABASE_URL", "postgresql://127.0.0.1:port/test", id="dsn-bad-port"
        ),
        pytest.param("ORDERVIEW_READ_DATABASE_URL", "mysql://127.0.0.1/test", id="read-dsn-scheme"),
        pytest.param("ORDERVIEW_REDIS_URL", "127.0.0.1:6379", id="redis-without-scheme"),
        pytest.param("ORDERVIEW_REDIS_URL", "redis://127.0.0.1:port/0", id="redis-bad-port"),
    ],
)
def test_a_malformed_setting_is_named_in_one_line_and_exits_2(subprocess_env, variable, value):
    proc = run_orderview({**subprocess_env, variable: value}, "projector")
    assert proc.returncode == 2
    assert (
        proc.stderr.count("\n") == 1 and variable in proc.stderr and "Traceback" not in proc.stderr
    )


@pytest.mark.parametrize("variable", ["ORDERVIEW_DATABASE_URL", "ORDERVIEW_REDIS_URL"])
def test_a_missing_required_setting_is_named_in_one_line_and_exits_2(subprocess_env, variable):
    env = {k: v for k, v in subprocess_env.items() if k != variable}
    proc = run_orderview(env, "projector")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"orderview: {variable} is not set: this command needs it"


def test_publish_reports_lines_that_are_not_json_with_their_number_and_skips_them(
    subprocess_env, tmp_path
):

    path = tmp_path / "events.jsonl"
    bad_utf8 = ev("participant.upserted", 7, 1, {"name": "Ann"}).encode().replace(b"Ann", b"\xff")
    path.write_bytes(
        ev("order.created", 1, 1, CREATED).encode()
        + b"\n{oops\n"
        + bad_utf8
        + b"\n"
        + ev("order.confirmed", 1, 2).encode()
        + b"\n"
        + b"[" * 5000
        + b"]" * 5000
        + b"\n"
    )
    proc = run_orderview(subprocess_env, "publish", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"{path}:2: not JSON" in proc.stderr and f"{path}:3: not JSON" in proc.stderr
    # Too deep to check: published for the projector to dead-letter.
    assert proc.stdout.strip().endswith("published 3 event(s)")


def test_logs_are_one_json_object_a_line_off_a_terminal(subprocess_env, tmp_path):

    path = tmp_path / "events.jsonl"
    path.write_text(ev("order.created", 1, 1, CREATED) + "\n")
    proc = run_orderview(subprocess_env, "publish", str(path))
    records = [msgspec.json.decode(line) for line in proc.stderr.splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)


async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed_and_applied_once(
    env, pool, redis_client
):
    settings = load_settings({**env, "ORDERVIEW_CLAIM_IDLE_MS": "300"})
    stream = settings.streams[0]
    lines = [ev("order.created", 1, 1, CREATED), ev("order.confirmed", 1, 2), POISON[0]]
    await publish_lines(redis_client, settings, lines)
    await redis_client.xgroup_create(stream, settings.consumer_group, id="0", mkstream=True)
    # A consumer that read the entries and died before acknowledging them.
    taken = await redis_client.xreadgroup(
        settings.consumer_group, "dead-consumer", {stream: ">"}, count=10
    )
    assert len(taken[0][1]) == 3
    async with projector(settings):
        await wait_until_caught_up(redis_client, settings)
    assert (await pool.fetchval(f"SELECT status FROM {ORDERS} WHERE id = 1")) == "confirmed"
    assert [d["event"] for d in await dead_letters(redis_client, stream)] == [POISON[0]]
    consumers = {
        c["name"]: c["pending"]
        for c in await redis_client.xinfo_consumers(stream, settings.consumer_group)
    }
    assert consumers.get(b"dead-consumer", 0) == 0


async def test_the_projector_serves_its_counters_on_the_metrics_port(env, pool, redis_client):
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = load_settings({**env, "ORDERVIEW_METRICS_PORT": str(port)})
    lines = [
        ev("order.created", 1, 1, CREATED),
        ev("order.created", 1, 1, CREATED),
        ev("order.custom", 1, 2),
        POISON[0],
    ]
    await publish_lines(redis_client, settings, lines)
    async with projector(settings):
        await wait_until_caught_up(redis_client, settings)
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    stream = settings.streams[0]

    def value(name: str, **labels: str) -> float:
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted({"stream": stream, **labels}.items()))
        line = next(line for line in text.splitlines() if line.startswith(f"{name}{{{wanted}}}"))
        return float(line.rsplit(" ", 1)[1])

    assert value("orderview_events_applied_total") == 2
    assert value("orderview_events_duplicate_total") == 1
    assert value("orderview_events_unknown_type_total") == 1
    assert value("orderview_dead_letters_total", reason="invalid") == 1
    assert f'orderview_batch_seconds_count{{stream="{stream}"}}' in text


@pytest.mark.parametrize("delay", [1.0, 2.5], ids=["early", "running"])
def test_sigterm_during_start_up_or_running_exits_0(subprocess_env, delay):
    import signal
    import time

    proc = subprocess.Popen([ORDERVIEW, "projector"], env=subprocess_env, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


async def test_a_consumer_group_that_vanishes_is_created_again_and_nothing_is_lost(
    settings, pool, redis_client
):
    async with projector(settings):
        await publish_lines(redis_client, settings, [ev("order.created", 1, 1, CREATED)])
        await wait_until_caught_up(redis_client, settings)
        await redis_client.xgroup_destroy(settings.streams[0], settings.consumer_group)
        await publish_lines(redis_client, settings, [ev("order.confirmed", 1, 2)])
        await wait_until_caught_up(redis_client, settings)
    assert (await pool.fetchval(f"SELECT status FROM {ORDERS} WHERE id = 1")) == "confirmed"
