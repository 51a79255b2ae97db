"""Concurrent batches that rename some participants and name others in new orders, crossing each
other: with participant locks taken in one ordered step they never deadlock (found by the chaos
suite, where three projectors on four shards deadlocked dozens of times a minute)."""

from __future__ import annotations

import asyncio
import json
import random

from projections.events import decode_event
from projections.tables import ORDERS
from projections.writer import apply_batch

WORKERS = 4
BATCHES = 40
OWNED = 6  # participants each worker renames; it names the others' in new orders


def _event(tenant: str, kind: str, aggregate_id: int, seq: int, data: dict):
    raw = json.dumps({"id": f"{kind}-{aggregate_id}-{seq}", "type": kind, "tenant": tenant,
                      "aggregate_id": aggregate_id, "seq": seq, "at": "2024-01-01T00:00:00Z",
                      "data": data})  # fmt: skip
    return decode_event(raw.encode())


def _batches(worker: int, rng: random.Random, tenant: str) -> list[list]:
    mine = [worker * OWNED + i + 1 for i in range(OWNED)]
    others = [p for p in range(1, WORKERS * OWNED + 1) if p not in mine]
    seqs = dict.fromkeys(mine, 0)
    batches = []
    for b in range(BATCHES):
        events = []
        for pid in rng.sample(mine, 3):
            seqs[pid] += 1
            events.append(_event(tenant, "participant.upserted", pid, seqs[pid], {"name": f"n{b}"}))
        for pid in rng.sample(others, 3):
            oid = worker * 100_000 + b * 10 + len(events)
            data = {"type": "sale", "currency": "EUR", "participant_id": pid}
            events.append(_event(tenant, "order.created", oid, 1, data))
        batches.append([(f"{worker}-{b}-{i}".encode(), e) for i, e in enumerate(events)])
    return batches


async def test_crossing_renames_and_namings_in_concurrent_batches_never_deadlock(pool):
    tenant = "locks"

    async def worker(w: int) -> None:
        for batch in _batches(w, random.Random(w), tenant):
            await apply_batch(pool, batch, attempts=1)  # a deadlock would raise here

    await asyncio.gather(*(worker(w) for w in range(WORKERS)))

    named = await pool.fetchval(
        f"SELECT count(*) FROM {ORDERS} WHERE tenant = $1 AND participant_name IS NULL",
        tenant,
    )
    assert named == 0
