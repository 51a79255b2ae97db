"""Walking pages while the projector keeps changing other orders returns every order exactly once."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.integration.test_api.conftest import events_of, expected_ids, order_id, walk
from tests.support import projector, publish_lines, wait_until_caught_up

_done_rounds: dict[int, int] = {}


def _churn(loaded, rounds: int) -> list[list[str]]:
    """Batches of events that keep changing the draft orders and adding new draft orders."""
    drafts = [s for s in loaded["acme"] if s.status == "draft"]
    first = _done_rounds.get(id(loaded), 0)
    _done_rounds[id(loaded)] = first + rounds
    seqs = {s.id: len(events_of(s)) + first for s in drafts}
    batches = []
    for r in range(first, first + rounds):
        batch = []
        for spec in drafts:
            seqs[spec.id] += 1
            item = {"id": 100 + r, "name": "extra", "quantity": 1, "unit_price": f"{r}.50"}
            batch.append(_event("order.item_added", spec.id, seqs[spec.id], {"item": item}))
        new_id = 1000 + r
        data = {"type": "sale", "currency": "EUR", "order_number": "SO-1", "items": []}
        batch.append(_event("order.created", new_id, 1, data))
        batches.append([json.dumps(e) for e in batch])
    return batches


def _event(kind: str, aggregate: int, seq: int, data: dict) -> dict:
    at = f"2024-01-01T00:{(aggregate + seq) % 60:02d}:00Z"  # in the middle of the catalogue
    return {"id": f"churn-{aggregate}-{seq}", "type": kind, "tenant": "acme",
            "aggregate_id": aggregate, "seq": seq, "at": at, "data": data}  # fmt: skip


@pytest.mark.parametrize(
    ("path", "params", "sort", "descending"),
    [
        pytest.param("/api/v1/service-orders", {"sort": "total"}, "total", True, id="v1-total"),
        pytest.param(
            "/api/v1/service-orders", {"sort": "order_number", "order": "asc"}, "order_number",
            False, id="v1-order-number",
        ),
        pytest.param("/v1/orders", {}, "created_at", True, id="v2-created"),
    ],
)  # fmt: skip
async def test_walking_pages_while_other_orders_change_returns_each_order_once(
    loaded, client, acme, rclient, api_settings, path, params, sort, descending
):
    keep = lambda s: s.status != "draft"  # noqa: E731
    statuses = "pending,confirmed,in_progress,completed,cancelled"
    filters = {"status": statuses} if path.startswith("/api") else {}
    batches = _churn(loaded, rounds=6)
    seen: list[int] = []

    async with projector(api_settings):
        for batch in batches:
            await publish_lines(rclient, api_settings, batch)
            if path.startswith("/api"):
                page = await walk(client, path, {**params, **filters, "limit": 4}, acme)
                seen = [order_id(o) for o in page]
                assert seen == expected_ids(loaded["acme"], sort, descending, keep)
            else:
                page = await walk(client, path, {"limit": 4, "type": "booking"}, acme)
                wanted = lambda s: s.type == "booking"  # noqa: E731
                assert [order_id(o) for o in page] == expected_ids(
                    loaded["acme"], sort, descending, wanted
                )
            await asyncio.sleep(0.05)
        await wait_until_caught_up(rclient, api_settings)
    draft = next(s for s in loaded["acme"] if s.status == "draft")
    changed = (await client.get(f"/v1/orders/ord_{draft.id}", headers=acme)).json()["data"]
    assert len(changed["services"]) == len(draft.items) + _done_rounds[id(loaded)]
