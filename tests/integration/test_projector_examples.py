"""The contract's example history, projected by the real projector, gives the example orders."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import pytest

from tests.support import dead_letters, orders_v2, project, service_orders

# Part of the smoke subset CI runs on embedded PostgreSQL and Valkey.
pytestmark = pytest.mark.smoke


def comparable(value):
    """Values as the contract compares them: numbers by value, timestamps by instant."""
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return Decimal(str(value)).normalize()
    if isinstance(value, str) and len(value) >= 20 and value[4] == "-" and value[10] == "T":
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value


async def test_example_history_gives_the_example_orders_in_both_dialects(
    examples, settings, pool, redis_client
):
    lines = (examples / "events.jsonl").read_text().splitlines()
    await project(redis_client, settings, lines)

    expected_v1 = json.loads((examples / "service-orders.json").read_text())["data"]
    expected_v2 = json.loads((examples / "orders.json").read_text())["data"]
    got_v1 = await service_orders(pool, "acme")
    got_v2 = await orders_v2(pool, "acme")
    assert sorted(got_v1) == sorted(o["id"] for o in expected_v1)
    for order in expected_v1:
        assert comparable(got_v1[order["id"]]) == comparable(order), order["id"]
    for order in expected_v2:
        assert comparable(got_v2[int(order["id"].removeprefix("ord_"))]) == comparable(order)


async def test_example_poison_entries_are_dead_lettered_with_their_reasons(
    examples, settings, pool, redis_client
):
    lines = (examples / "events.jsonl").read_text().splitlines()
    poison = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            poison.append(line)
            continue
        if not isinstance(event, dict) or not str(event.get("id", "")).startswith("evt_"):
            poison.append(line)
    await project(redis_client, settings, lines)

    dlq = await dead_letters(redis_client, settings.streams[0])
    # The non-JSON line is published too (raw) by this test's publisher, and dead-lettered.
    assert sorted(d["event"] for d in dlq) == sorted(poison)
    assert all(d["error"] and d["stream"] == settings.streams[0] and d["entry_id"] for d in dlq)
