"""The API documents of the model's orders, written from api.md and the seed documents alone.

An independent rendering (not the project's `projections/documents.py`): values are Python values
(ints, Decimals for money and rates, aware datetimes for timestamps), so a served document is
compared through `served` below, by value, as the contract compares them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext


def _money(value) -> Decimal:
    return Decimal(str(value))


def _line(item: dict) -> dict:
    """An item's amounts: subtotal exact, tax rounded half away from zero to cents."""
    price, rate = _money(item["unit_price"]), _money(item.get("tax_rate", 0))
    with localcontext(prec=80):  # exact: no rounding before the cent
        subtotal = price * item["quantity"]
        tax = (subtotal * rate).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        total = subtotal + tax
    return {"price": price, "rate": rate, "subtotal": subtotal, "tax": tax, "total": total}


def _items(order: dict) -> list[dict]:
    return [order["items"][i] for i in sorted(order["items"])]


def _person(tenant: str, order: dict, participants: dict) -> dict | None:
    """The participant as upserted, or None (no participant, or no upsert of it yet)."""
    pid = order["participant_id"]
    person = participants.get((tenant, pid)) if pid is not None else None
    if person is None or person["name"] is None:  # never upserted (unknown types only)
        return None
    return person


def amounts(order: dict) -> dict:
    """The order's subtotal, tax and total: sums of its lines."""
    lines = [_line(item) for item in _items(order)]
    with localcontext(prec=80):
        subtotal = sum((line["subtotal"] for line in lines), Decimal(0))
        tax = sum((line["tax"] for line in lines), Decimal(0))
        return {"subtotal": subtotal, "tax": tax, "total": subtotal + tax}


def service_order(
    tenant: str, order_id: int, order: dict, participants: dict, include: tuple[str, ...] = ()
) -> dict:
    """Dialect 1 (service orders) document; `include` of "items", "participant"."""
    sums = amounts(order)
    doc = {
        "id": order_id,
        "order_number": order["order_number"],
        "event_participant_id": order["participant_id"],
        "status": order["status"],
        "subtotal": sums["subtotal"],
        "tax_total": sums["tax"],
        "total": sums["total"],
        "currency": order["currency"],
        "notes": order["notes"],
        "submitted_at": order["submitted_at"],
        "confirmed_at": order["confirmed_at"],
        "cancelled_at": order["cancelled_at"],
        "cancellation_reason": order["cancellation_reason"],
        "created_at": order["created_at"],
        "updated_at": order["updated_at"],
    }
    if "items" in include:
        doc["items"] = []
        for item in _items(order):
            line = _line(item)
            doc["items"].append(
                {
                    "id": item["id"],
                    "service_id": item.get("service_id"),
                    "name": item["name"],
                    "quantity": item["quantity"],
                    "unit_price": line["price"],
                    "tax_rate": line["rate"],
                    "subtotal": line["subtotal"],
                    "tax": line["tax"],
                    "total": line["total"],
                }
            )
    if "participant" in include:
        person = _person(tenant, order, participants)
        doc["participant"] = (
            None
            if person is None
            else {"id": order["participant_id"], "name": person["name"], "email": person["email"]}
        )
    return doc


def order_v2(tenant: str, order_id: int, order: dict, participants: dict) -> dict:
    """Dialect 2 (orders and bookings) document."""
    pid = order["participant_id"]
    person = _person(tenant, order, participants)
    sums = amounts(order)
    return {
        "id": f"ord_{order_id}",
        "type": order["type"],
        "status": order["status"],
        "customerId": None if pid is None else f"cust_{pid}",
        "customerName": person["name"] if person else None,
        "customerEmail": person["email"] if person else None,
        "locationId": order["location_id"],
        "scheduledAt": order["scheduled_at"],
        "duration": order["duration"],
        "services": [
            {
                "id": item.get("service_id"),
                "name": item["name"],
                "price": _money(item["unit_price"]),
                "quantity": item["quantity"],
            }
            for item in _items(order)
        ],
        "subtotal": sums["subtotal"],
        "tax": sums["tax"],
        "total": sums["total"],
        "paymentStatus": order["payment_status"],
        "notes": order["notes"],
        "createdAt": order["created_at"],
        "updatedAt": order["updated_at"],
    }


# ---- comparing ---------------------------------------------------------------------------------

_UTC_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")


def served(value):
    """A served JSON value (decoded with parse_float=Decimal) in the rendering's terms: numbers
    by value, RFC 3339 UTC `Z` timestamps as datetimes; anything else (a number in a string, a
    timestamp with an offset, a boolean) stays as it is and so differs."""
    return _comparable(value, _served_leaf)


def rendered(value):
    """A rendered document in the same terms as `served`."""
    return _comparable(value, lambda v: v.astimezone(UTC) if isinstance(v, datetime) else v)


def _served_leaf(value):
    if isinstance(value, str) and _UTC_STAMP.fullmatch(value):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    return value


def _comparable(value, leaf):
    """Walk a document: numbers compared by value, other scalars through `leaf`."""
    if isinstance(value, dict):
        return {k: _comparable(v, leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_comparable(v, leaf) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | Decimal):
        return _Number(value)
    return leaf(value)


class _Number:
    """A JSON number compared by value only (so never equal to a bool, a string or null)."""

    def __init__(self, value: int | Decimal) -> None:
        self.value = Decimal(value)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Number) and self.value == other.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return str(self.value)


def diff(expected, got, path: str = "") -> list[str]:
    """Readable differences between two values in the same terms, one line per leaf."""
    if isinstance(expected, dict) and isinstance(got, dict):
        lines = []
        for key in expected.keys() | got.keys():
            where = f"{path}.{key}"
            if key not in got:
                lines.append(f"{where}: missing (expected {expected[key]!r})")
            elif key not in expected:
                lines.append(f"{where}: unexpected key (got {got[key]!r})")
            else:
                lines += diff(expected[key], got[key], where)
        return sorted(lines)
    if isinstance(expected, list) and isinstance(got, list):
        if len(expected) != len(got):
            return [
                f"{path}: expected {len(expected)} entries {expected!r}, got {len(got)} {got!r}"
            ]
        return [
            line
            for i, (e, g) in enumerate(zip(expected, got, strict=True))
            for line in diff(e, g, f"{path}[{i}]")
        ]
    if expected != got or type(expected) is not type(got):
        return [f"{path}: expected {expected!r}, got {got!r}"]
    return []
