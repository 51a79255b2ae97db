"""`orderview dlq` as an operator runs it, against dead letters a real projector wrote."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from prometheus_client import REGISTRY

from orderview.settings import load_settings
from projections.progress import refresh_ledger_metrics
from projections.tables import DEAD_LETTERS, ORDERS
from tests.support import (
    dead_letters,
    projector,
    publish_lines,
    run_orderview,
    wait_until_caught_up,
)

CREATED = {"type": "sale", "currency": "EUR", "participant_id": 7, "items": [{"id": 1, "name": "x", "quantity": 2, "unit_price": "10.00", "tax_rate": "0.1"}]}  # fmt: skip
ADDED = {"item": {"id": 2, "name": "y", "quantity": 1, "unit_price": "5.00"}}
BAD_CURRENCY = {**CREATED, "currency": "euro"}


def ev(type_: str, agg: int, seq: int, data: dict | None = None, tenant: str = "acme") -> str:
    at = f"2024-01-01T00:{seq:02d}:00Z"
    return json.dumps({"id": f"{type_}-{agg}-{seq}", "type": type_, "tenant": tenant, "aggregate_id": agg, "seq": seq, "at": at, "data": data or {}})  # fmt: skip


def dlq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_orderview(env, "dlq", *args)


def listed(env: dict[str, str], *args: str) -> list[dict]:
    done = dlq(env, "list", "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr that says all of `words`."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr


@pytest.fixture
def gap_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    return {**subprocess_env, "ORDERVIEW_GAP_TIMEOUT": "0.3"}


async def dead_letter(redis_client, env: dict[str, str], lines: list[str]) -> None:
    """Project lines with a short gap timeout until every entry is settled."""
    settings = load_settings(env)
    async with projector(settings):
        await publish_lines(redis_client, settings, lines)
        await wait_until_caught_up(redis_client, settings)


POISON = [
    ev("order.created", 5, 1, BAD_CURRENCY, tenant="globex"),
    "not json at all",
]


async def test_poison_and_gap_dead_letters_are_listed_newest_first_with_their_reasons(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(
        redis_client,
        gap_env,
        [*POISON, ev("order.created", 1, 1, CREATED), ev("order.confirmed", 1, 3)],
    )
    items = listed(gap_env)
    assert [(i["reason"], i["tenant"], i["kind"], i["aggregate_id"], i["seq"]) for i in items] == [
        ("gap", "acme", "order", 1, 3),  # waited for its predecessor: dead-lettered last
        ("poison", None, None, None, None),
        ("poison", "globex", "order", 5, 1),
    ]
    assert {i["state"] for i in items} == {"waiting"} and {i["stream"] for i in items} == {stream}
    assert items[0]["error"].startswith("gap: order 1 of tenant acme got seq 3")
    assert "currency" in items[2]["error"] and items[1]["error"].startswith("not valid JSON")
    ids = [e[0].decode() for e in await redis_client.xrange(stream)]
    assert [i["entry_id"] for i in items] == [ids[3], ids[1], ids[0]]

    assert [i["entry_id"] for i in listed(gap_env, "--tenant", "globex")] == [ids[0]]
    assert [i["entry_id"] for i in listed(gap_env, "--reason", "gap")] == [ids[3]]
    assert len(listed(gap_env, "--reason", "poison")) == 2
    assert [i["entry_id"] for i in listed(gap_env, "--reason", "not valid JSON")] == [ids[1]]

    table = dlq(gap_env, "list")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == [
        "TIME",
        "(UTC)",
        "STREAM",
    ]
    assert [line.split()[3] for line in table.stdout.splitlines()[1:]] == [ids[3], ids[1], ids[0]]


async def test_show_prints_the_event_as_received_the_full_reason_and_the_history(
    gap_env, pool, redis_client
):
    line = POISON[0]
    await dead_letter(redis_client, gap_env, [line])
    (item,) = listed(gap_env)
    done = dlq(gap_env, "show", item["entry_id"])
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[-1] == line  # the bytes as received, last
    assert f"error      {item['error']}" in out and "reason     poison" in out
    assert any("dead-lettered by consumer test-consumer" in o for o in out)
    shown = json.loads(dlq(gap_env, "show", "--json", item["entry_id"]).stdout)
    assert shown["event"] == line and shown["history"][0]["what"].startswith("dead-lettered")


async def test_a_gap_replayed_after_its_predecessor_arrives_is_applied_with_the_events_behind_it_once(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(
        redis_client,
        gap_env,
        [ev("order.created", 1, 1, CREATED), ev("order.item_added", 1, 3, ADDED)],
    )
    (gap,) = listed(gap_env)
    assert gap["reason"] == "gap"
    # The predecessor arrives, and an event behind the gap waits (a long gap timeout now).
    settings = load_settings({**gap_env, "ORDERVIEW_GAP_TIMEOUT": "600"})
    async with projector(settings):
        await publish_lines(
            redis_client, settings, [ev("order.submitted", 1, 2), ev("order.confirmed", 1, 4)]
        )
        await wait_until_caught_up(redis_client, settings, allowed=1)  # seq 4 held behind 3
        assert await pool.fetchval(f"SELECT seq FROM {ORDERS} WHERE id = 1") == 2

        done = dlq(gap_env, "replay", gap["entry_id"])
        assert done.returncode == 0, done.stderr
        new_id = (await redis_client.xrange(stream))[-1][0].decode()
        assert done.stdout.splitlines() == [
            f"{stream} {gap['entry_id']} replayed as {stream} {new_id}",
            "replayed 1 dead letter(s)",
        ]
        await wait_until_caught_up(redis_client, settings)
        row = await pool.fetchrow(f"SELECT seq, status, items_v1 FROM {ORDERS} WHERE id = 1")
        assert (row["seq"], row["status"]) == (4, "confirmed")
        assert [i["id"] for i in json.loads(row["items_v1"])] == [1, 2]

        again = dlq(gap_env, "replay", gap["entry_id"])
        assert again.returncode == 0
        assert again.stdout.splitlines() == [
            f"{stream} {gap['entry_id']}: already replayed as {new_id}, skipped",
            "nothing to do",
        ]
        assert dlq(gap_env, "replay", "--all").stdout.strip() == "nothing to do"
        # The same event appended once more (as a replay racing a commit would) applies nothing.
        await redis_client.xadd(stream, {"event": ev("order.item_added", 1, 3, ADDED)})
        await wait_until_caught_up(redis_client, settings)
    assert json.loads(await pool.fetchval(f"SELECT items_v1 FROM {ORDERS} WHERE id = 1")) == json.loads(row["items_v1"])  # fmt: skip
    (item,) = listed(gap_env)
    assert (item["state"], item["replayed_as"], item["replayed_to"]) == ("replayed", new_id, stream)
    assert len(await dead_letters(redis_client, stream)) == 1  # not dead-lettered again
    show = dlq(gap_env, "show", gap["entry_id"]).stdout
    assert f"replayed as entry {new_id} of {stream}" in show


async def test_drop_removes_a_dead_letter_from_the_dlq_stream_and_marks_it_in_the_ledger(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(redis_client, gap_env, POISON)
    first, second = listed(gap_env)
    done = dlq(gap_env, "drop", first["entry_id"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{stream} {first['entry_id']} dropped", "dropped 1 dead letter(s)"]  # fmt: skip
    assert [d["entry_id"] for d in await dead_letters(redis_client, stream)] == [second["entry_id"]]
    states = {i["entry_id"]: i["state"] for i in listed(gap_env)}
    assert states == {first["entry_id"]: "dropped", second["entry_id"]: "waiting"}
    assert "dropped (deleted from" in dlq(gap_env, "show", first["entry_id"]).stdout
    again = dlq(gap_env, "drop", first["entry_id"])
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "nothing to do"
    assert dlq(gap_env, "replay", first["entry_id"]).stdout.splitlines()[-1] == "nothing to do"


async def test_drop_all_asks_and_refuses_without_yes_when_stdin_is_not_a_terminal(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(redis_client, gap_env, POISON)
    done = run_orderview(gap_env, "dlq", "drop", "--all", stdin=subprocess.DEVNULL)
    refused(done, "--yes", "2 dead letter(s)")
    assert len(await dead_letters(redis_client, stream)) == 2
    assert (
        dlq(gap_env, "drop", "--all", "--reason", "gap", "--yes").stdout.strip() == "nothing to do"
    )
    done = dlq(gap_env, "drop", "--all", "--reason", "not valid JSON", "--yes")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "dropped 1 dead letter(s)"
    assert len(await dead_letters(redis_client, stream)) == 1

    await refresh_ledger_metrics(pool, stream)
    labels = {"stream": stream, "reason": "poison"}
    assert REGISTRY.get_sample_value("orderview_dead_letters_waiting", labels) == 1
    assert REGISTRY.get_sample_value("orderview_dead_letters_dropped_total", labels) == 1
    assert REGISTRY.get_sample_value("orderview_dead_letters_replayed_total", labels) == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(("show", "1-0"), ("no dead letter with entry id 1-0",), id="show-unknown"),
        pytest.param(("replay", "1-0", "2-0"), ("no dead letter",), id="replay-unknown"),
        pytest.param(("drop", "1-0"), ("no dead letter",), id="drop-unknown"),
        pytest.param(("show", "abc"), ("ENTRY_ID 'abc'",), id="malformed"),
        pytest.param(("list", "--stream", "nope"), ("'nope'", "ORDERVIEW_STREAMS"), id="stream"),
        pytest.param(("replay",), ("ENTRY_ID", "--all"), id="nothing-named"),
        pytest.param(("replay", "1-0", "--all"), ("one of the two",), id="both"),
    ],
)
async def test_bad_input_is_one_line_and_exit_2(gap_env, pool, args, words):
    refused(dlq(gap_env, *args), *words)


async def test_nothing_matching_is_nothing_to_do_and_exit_0(gap_env, pool):
    for args in (("replay", "--all"), ("drop", "--all", "--yes"), ("drop", "--all")):
        done = dlq(gap_env, *args)
        assert (done.returncode, done.stdout.strip()) == (0, "nothing to do")
    assert dlq(gap_env, "list").stdout.strip() == "no dead letters"
    assert dlq(gap_env, "list", "--json").stdout == ""


async def test_an_entry_id_in_two_streams_is_refused_naming_both_unless_stream_picks_one(
    gap_env, stream_prefix, pool, redis_client
):
    streams = [f"{stream_prefix}:a", f"{stream_prefix}:b"]
    env = {**gap_env, "ORDERVIEW_STREAMS": ",".join(streams)}
    for stream in streams:
        await redis_client.xadd(stream, {"event": "not json"}, id="1700000000000-7")
    await dead_letter(redis_client, env, [])
    refused(dlq(env, "show", "1700000000000-7"), streams[0], streams[1], "--stream")
    done = dlq(env, "drop", "--stream", streams[1], "1700000000000-7")
    assert done.returncode == 0 and done.stdout.splitlines()[0] == f"{streams[1]} 1700000000000-7 dropped"  # fmt: skip
    assert len(await dead_letters(redis_client, streams[0])) == 1
    assert await dead_letters(redis_client, streams[1]) == []


async def test_poison_replayed_is_dead_lettered_again_under_its_new_entry_id(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(redis_client, gap_env, POISON)
    done = dlq(gap_env, "replay", "--all", "--reason", "poison")
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "replayed 2 dead letter(s)"
    new_ids = [line.split()[-1] for line in done.stdout.splitlines()[:-1]]
    await dead_letter(redis_client, gap_env, [])
    items = listed(gap_env)
    assert sorted(i["entry_id"] for i in items if i["state"] == "waiting") == sorted(new_ids)
    assert {i["replayed_as"] for i in items if i["state"] == "replayed"} == set(new_ids)
    assert len(await dead_letters(redis_client, stream)) == 4


async def test_two_operators_replaying_at_once_append_each_dead_letter_once(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(redis_client, gap_env, [f"poison {i}" for i in range(60)])
    before = await redis_client.xlen(stream)
    both = await asyncio.gather(
        *(asyncio.to_thread(dlq, gap_env, "replay", "--all") for _ in range(2))
    )
    assert [d.returncode for d in both] == [0, 0]
    replayed = [line for d in both for line in d.stdout.splitlines() if " replayed as " in line]
    assert len(replayed) == 60
    assert await redis_client.xlen(stream) == before + 60


async def test_dead_letters_recorded_before_migration_0006_are_read_from_the_dlq_stream(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    await dead_letter(redis_client, gap_env, [POISON[0]])
    await pool.execute(
        f"UPDATE {DEAD_LETTERS} SET event = NULL, dlq_id = NULL WHERE stream = $1", stream
    )
    (item,) = listed(gap_env)
    assert (item["tenant"], item["aggregate_id"]) == ("globex", 5)
    assert dlq(gap_env, "show", item["entry_id"]).stdout.splitlines()[-1] == POISON[0]
    assert dlq(gap_env, "drop", item["entry_id"]).returncode == 0
    assert await dead_letters(redis_client, stream) == []


async def test_letters_of_one_batch_are_listed_newest_entry_first_by_number_not_text(
    gap_env, pool, redis_client
):
    stream = load_settings(gap_env).streams[0]
    for seq in (9, 10):
        await redis_client.xadd(stream, {"event": "not json"}, id=f"1700000000000-{seq}")
    await dead_letter(redis_client, gap_env, [])
    assert [i["entry_id"] for i in listed(gap_env)] == ["1700000000000-10", "1700000000000-9"]
