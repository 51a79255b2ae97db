"""An independent fold of valid events, written from events.md without the project's code.

The crash, replica and chaos tests compare the read tables with this model.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _tax(subtotal: Decimal, rate: Decimal) -> Decimal:
    return (subtotal * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def expected_state(events: list[dict]) -> tuple[dict, dict]:
    """(orders, participants) keyed by (tenant, id) after applying each aggregate's events in
    seq order, once each, stopping at the first missing seq."""
    streams: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for e in events:
        streams[(e["tenant"], e["type"].split(".")[0], e["aggregate_id"])].setdefault(e["seq"], e)
    orders: dict[tuple, dict] = {}
    participants: dict[tuple, dict] = {}
    for (tenant, kind, agg), by_seq in streams.items():
        seq = 1
        while seq in by_seq:
            e = by_seq[seq]
            if kind == "participant":
                if e["type"] == "participant.upserted":
                    participants[(tenant, agg)] = {
                        "name": e["data"]["name"],
                        "email": e["data"].get("email"),
                    }
                else:
                    participants.setdefault((tenant, agg), {"name": None, "email": None})
            else:
                order = orders.get((tenant, agg))
                if order is None and e["type"] != "order.created":
                    break
                if order is None:
                    order = orders[(tenant, agg)] = _created(e)
                else:
                    _apply(order, e)
                order["updated_at"] = _ts(e["at"])
                order["seq"] = seq
            seq += 1
    for order in orders.values():
        _totals(order)
    return orders, participants


def _created(e: dict) -> dict:
    d = e["data"]
    return {
        "type": d["type"], "currency": d["currency"], "status": "draft", "payment_status": "pending",
        "order_number": d.get("order_number"), "event_key": d.get("event_key"),
        "participant_id": d.get("participant_id"), "location_id": d.get("location_id"),
        "scheduled_at": _ts(d["scheduled_at"]) if d.get("scheduled_at") else None,
        "duration": d.get("duration"), "notes": d.get("notes"),
        "items": {i["id"]: dict(i) for i in d.get("items", [])},
        "submitted_at": None, "confirmed_at": None, "cancelled_at": None, "cancellation_reason": None,
        "created_at": _ts(e["at"]),
    }  # fmt: skip


DETAILS = (
    "order_number",
    "event_key",
    "participant_id",
    "location_id",
    "scheduled_at",
    "duration",
    "notes",
)


def _apply(order: dict, e: dict) -> None:
    d, t, at = e["data"], e["type"], _ts(e["at"])
    if t == "order.item_added":
        order["items"][d["item"]["id"]] = dict(d["item"])
    elif t == "order.item_updated" and d["item_id"] in order["items"]:
        order["items"][d["item_id"]].update({k: v for k, v in d.items() if k != "item_id"})
    elif t == "order.item_removed":
        order["items"].pop(d["item_id"], None)
    elif t == "order.details_changed":
        for k, v in d.items():
            if k in DETAILS:  # unknown keys are ignored
                order[k] = _ts(v) if k == "scheduled_at" and v else v
    elif t == "order.submitted":
        order.update(status="pending", submitted_at=at)
        if d.get("order_number") is not None:
            order["order_number"] = d["order_number"]
    elif t == "order.confirmed":
        order.update(status="confirmed", confirmed_at=at)
    elif t == "order.started":
        order["status"] = "in_progress"
    elif t == "order.completed":
        order["status"] = "completed"
    elif t == "order.cancelled":
        order.update(status="cancelled", cancelled_at=at, cancellation_reason=d.get("reason"))
    elif t == "order.payment_status_changed":
        order["payment_status"] = d["payment_status"]


def _totals(order: dict) -> None:
    subtotal = tax = Decimal(0)
    for item in order["items"].values():
        line = Decimal(str(item["unit_price"])) * item["quantity"]
        subtotal += line
        tax += _tax(line, Decimal(str(item.get("tax_rate", 0))))
    order.update(subtotal=subtotal, tax_total=tax, total=subtotal + tax)


COMPARED = [
    "seq",
    "status",
    "payment_status",
    "type",
    "currency",
    "order_number",
    "event_key",
    "participant_id",
    "location_id",
    "scheduled_at",
    "duration",
    "subtotal",
    "tax_total",
    "total",
    "submitted_at",
    "confirmed_at",
    "cancelled_at",
    "created_at",
    "updated_at",
]


async def table_state(pool) -> tuple[dict, dict]:
    """The read tables as (orders, participants) in the model's shape."""
    from projections.tables import ORDERS, PARTICIPANTS

    rows = await pool.fetch(f"SELECT *, items_v1 FROM {ORDERS}")
    orders = {}
    for r in rows:
        order = {c: r[c] for c in COMPARED}
        order["participant_name"], order["participant_email"] = (
            r["participant_name"],
            r["participant_email"],
        )
        order["items_v1"] = r["items_v1"]
        orders[(r["tenant"], r["id"])] = order
    prows = await pool.fetch(f"SELECT tenant, id, name, email FROM {PARTICIPANTS} WHERE seq > 0")
    participants = {(r["tenant"], r["id"]): {"name": r["name"], "email": r["email"]} for r in prows}
    return orders, participants


def differences(expected: tuple[dict, dict], actual: tuple[dict, dict]) -> list[str]:
    """Readable differences between the model and the tables (empty when equal)."""
    import json

    exp_orders, exp_parts = expected
    got_orders, got_parts = actual
    problems = []
    if set(exp_orders) != set(got_orders):
        problems.append(
            f"order keys differ: missing {set(exp_orders) - set(got_orders)}, extra {set(got_orders) - set(exp_orders)}"
        )
    if exp_parts != got_parts:
        problems.append("participants differ")
    for key in set(exp_orders) & set(got_orders):
        exp, got = exp_orders[key], got_orders[key]
        for c in COMPARED:
            if exp[c] != got[c]:
                problems.append(f"{key} {c}: expected {exp[c]!r}, got {got[c]!r}")
        part = exp_parts.get((key[0], exp["participant_id"])) if exp["participant_id"] else None
        want = (part["name"], part["email"]) if part else (None, None)
        if want != (got["participant_name"], got["participant_email"]):
            problems.append(
                f"{key} participant: expected {want}, got {(got['participant_name'], got['participant_email'])}"
            )
        items = json.loads(got["items_v1"])
        if [i["id"] for i in items] != sorted(exp["items"]):
            problems.append(
                f"{key} items: expected {sorted(exp['items'])}, got {[i['id'] for i in items]}"
            )
    return problems
