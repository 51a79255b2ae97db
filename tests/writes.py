"""Writes a producer makes and reads at once (read-your-writes tests): one event, XADDed by hand."""

from __future__ import annotations

import json

import redis.asyncio as redis


def order_created(tenant: str, order_id: int, seq: int = 1, note: str = "") -> dict:
    """`order.created` (seq 1: order number `RYW-<id>`, location `loc_ryw_<id>`), else
    `order.submitted` at `seq`."""
    if seq > 1:
        kind, data = "order.submitted", {}
    else:
        kind = "order.created"
        data = {
            "type": "sale",
            "currency": "EUR",
            "notes": note or None,
            "order_number": f"RYW-{order_id}",
            "location_id": f"loc_ryw_{order_id}",
            "items": [],
        }
    return {
        "id": f"{tenant}-{order_id}-{seq}",
        "type": kind,
        "tenant": tenant,
        "aggregate_id": order_id,
        "seq": seq,
        "at": "2024-01-01T00:00:00Z",
        "data": data,
    }


async def xadd(client: redis.Redis, stream: str, event: dict) -> str:
    """Append an event as a producer does; the entry id XADD returned (the position)."""
    entry_id = await client.xadd(stream, {"event": json.dumps(event)})
    return entry_id.decode() if isinstance(entry_id, bytes) else entry_id
