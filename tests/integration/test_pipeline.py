"""Two batches in flight per consumer (pipeline.Turn): batch k+1 folds on batch k's uncommitted
states, commits only after k, and rolls back when k fails; a restarted consumer re-reading its own
pending entries never takes an entry that is already in flight."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from orderview.settings import load_settings
from projections.events import decode_event
from projections.pipeline import Superseded, Turn
from projections.tables import ORDERS
from projections.writer import apply_batch
from services.histories import poison_entries, varied
from services.projector import run_projector
from tests.model import differences, expected_state, table_state
from tests.support import dead_letters, outstanding, project, publish_lines

CREATED = {"type": "sale", "currency": "EUR", "items": [{"id": 1, "name": "x", "quantity": 2, "unit_price": "10.00"}]}  # fmt: skip
# Valid per the contract, too wide for a btree entry: PostgreSQL refuses the batch.
WIDE = {**CREATED, "order_number": "".join(chr(0x20000 + i * 37) for i in range(1000))}


def line(agg: int, seq: int, type_: str = "order.submitted", data: dict | None = None) -> str:
    envelope = {"id": f"e-{agg}-{seq}", "type": type_, "tenant": "pipe", "aggregate_id": agg}
    at = f"2024-01-01T00:{seq:02d}:00Z"
    return json.dumps({**envelope, "seq": seq, "at": at, "data": data or {}})


def entry(agg: int, seq: int, type_: str = "order.submitted", data: dict | None = None):
    return (f"{agg}-{seq}".encode(), decode_event(line(agg, seq, type_, data).encode()))


def three_orders(second: dict = CREATED) -> list[str]:
    """Orders 4, 5 (created with `second`) and 6, interleaved: 4 ends confirmed, 6 pending."""
    return [
        line(4, 1, "order.created", CREATED),
        line(5, 1, "order.created", second),
        line(4, 2),
        line(6, 1, "order.created", CREATED),
        line(6, 2),
        line(4, 3, "order.confirmed"),
    ]


async def stored(pool) -> dict[int, tuple[int, str]]:
    rows = await pool.fetch(f"SELECT id, seq, status FROM {ORDERS} WHERE tenant = 'pipe'")
    return {r["id"]: (r["seq"], r["status"]) for r in rows}


async def test_the_next_batch_folds_on_the_uncommitted_states_of_the_batch_in_flight(pool):
    first = Turn()
    second = Turn(first)
    one = asyncio.create_task(
        apply_batch(pool, [entry(1, 1, "order.created", CREATED)], turn=first)
    )
    two = asyncio.create_task(apply_batch(pool, [entry(1, 2)], turn=second))
    plan_one, _, _ = await one
    plan_two, _, _ = await two

    assert plan_one.applied == [b"1-1"]
    assert plan_two.applied == [b"1-2"] and plan_two.held == []  # not a gap: seq 1 was in flight
    assert await stored(pool) == {1: (2, "pending")}


async def test_a_batch_whose_predecessor_fails_rolls_back_and_writes_nothing(pool):
    first = Turn()
    second = Turn(first)
    one = asyncio.create_task(apply_batch(pool, [entry(2, 1, "order.created", WIDE)], turn=first))
    two = asyncio.create_task(
        apply_batch(pool, [entry(3, 1, "order.created", CREATED)], turn=second)
    )
    with pytest.raises(Exception) as refused:
        await one
    with pytest.raises(Superseded):
        await two

    assert not isinstance(refused.value, Superseded)
    assert await stored(pool) == {}  # order 3 was written, and rolled back with its predecessor


async def test_a_refused_batch_in_flight_is_applied_event_by_event_and_the_next_batch_too(
    env, pool, redis_client
):
    settings = load_settings({**env, "ORDERVIEW_BATCH_SIZE": "2"})
    lines = three_orders(second=WIDE)
    await project(redis_client, settings, lines)

    assert await stored(pool) == {4: (3, "confirmed"), 6: (2, "pending")}
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert [d["event"] for d in dlq] == [lines[1]]


async def test_an_event_that_breaks_the_fold_is_dead_lettered_and_the_projector_goes_on(
    env, pool, redis_client, monkeypatch
):
    """A defect met by an event that validation let through (here: rendering order 5 raises)
    must not stop the projector in a crash loop: that event is dead-lettered, the rest applied."""
    import projections.writer

    real = projections.writer.render_order

    def render_order(state):
        if state.id == 5:
            raise ArithmeticError("a defect in rendering")
        return real(state)

    monkeypatch.setattr(projections.writer, "render_order", render_order)
    settings = load_settings({**env, "ORDERVIEW_BATCH_SIZE": "3"})
    lines = three_orders()
    await project(redis_client, settings, lines)

    assert await stored(pool) == {4: (3, "confirmed"), 6: (2, "pending")}
    dlq = await dead_letters(redis_client, settings.streams[0])
    assert [(d["event"], d["error"]) for d in dlq] == [
        (lines[1], "could not be applied: ArithmeticError('a defect in rendering')")
    ]


async def test_a_defect_in_reading_stops_the_projector_with_its_error_instead_of_spinning(
    env, redis_client, monkeypatch
):
    """Only a batch's own failure is dead-lettered event by event; a defect outside applying
    (here: in decoding entries) is not an entry's fault and stops the process, visibly."""
    import projections.consumer

    def decode_entries(entries):
        raise LookupError("a defect in reading")

    monkeypatch.setattr(projections.consumer, "decode_entries", decode_entries)
    settings = load_settings(env)
    await publish_lines(redis_client, settings, [line(4, 1, "order.created", CREATED)])
    with pytest.raises(LookupError, match="a defect in reading"):
        await asyncio.wait_for(run_projector(settings, asyncio.Event()), 10)


async def test_a_restarted_consumer_applies_its_own_pending_entries_once_in_small_batches(
    env, pool, redis_client
):
    """A pending list longer than a batch is read after the last entry read, not from the start
    again while earlier batches are still in flight (which applied and dead-lettered twice)."""
    settings = load_settings({**env, "ORDERVIEW_BATCH_SIZE": "7"})
    history = varied(5, orders=20)
    lines = [*history.lines(), *poison_entries("tenant-0")[:6]]
    stream = settings.streams[0]
    await publish_lines(redis_client, settings, lines)
    await redis_client.xgroup_create(stream, settings.consumer_group, id="0")
    # The consumer of that name took everything, then died before acknowledging anything.
    await redis_client.xreadgroup(
        settings.consumer_group, settings.consumer, {stream: ">"}, count=len(lines)
    )

    await project(redis_client, settings, [])

    assert differences(expected_state(history.events), await table_state(pool)) == []
    dlq = await dead_letters(redis_client, stream)
    assert sorted(d["entry_id"] for d in dlq) == sorted({d["entry_id"] for d in dlq})
    assert len(dlq) == 6


async def test_an_entry_delivered_to_the_read_in_flight_when_a_stop_comes_is_applied(
    env, pool, redis_client
):
    """A stop never cancels a blocking read: entries it was handed would stay pending, unapplied."""
    settings = load_settings(
        {**env, "ORDERVIEW_BLOCK_MS": "3000", "ORDERVIEW_CONSUMER_NAME": f"stop-{os.getpid()}"}
    )
    stream = settings.streams[0]
    stopping = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stopping))
    mine = f"orderview-projector:{settings.consumer}"  # not another run's projector on this Redis
    for _ in range(1000):  # until the consumer is blocked in XREADGROUP on the empty stream
        clients = await redis_client.client_list()
        # `cmd` is the last command run: blocked (flag `b`) tells the read that waits from the
        # consumer's earlier non-blocking read of its own pending entries.
        blocked = (c for c in clients if c.get("name") == mine and "b" in c.get("flags", ""))
        if any(c.get("cmd") == "xreadgroup" for c in blocked):
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await redis_client.xadd(stream, {"event": line(7, 1, "order.created", CREATED)})
    await asyncio.wait_for(task, 10)

    assert await outstanding(redis_client, settings) == 0
    assert await stored(pool) == {7: (1, "draft")}
