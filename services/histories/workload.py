"""The one generator of event histories: a seeded, endless stream of valid events.

Orders are created with items, then changed (items added, updated, removed; details; payment
status) and walked through their statuses; participants are created and renamed, some after the
orders that name them. Every event follows `events.md`: per-aggregate seq from 1 without gaps.
Realistic by default (the benchmarks, the demo); with `variety`, values at the edges of the
contract (`edges.py`) come now and then instead (the tests).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from projections.events import stream_for
from services.histories import edges

TENANTS = ("acme", "globex", "initech", "umbrella-eu")
SERVICES = [f"svc_{n:03d}" for n in range(40)]
NAMES = ["Consultation", "Haircut", "Massage", "Repair", "Cleaning", "Lesson", "Checkup", "Fitting"]
FIRST = ["John", "Jane", "Ana", "Li", "Omar", "Sara", "Ivan", "Mia", "Noah", "Emma", "Yuki", "Lena"]
LAST = ["Doe", "Smith", "Garcia", "Chen", "Khan", "Müller", "Rossi", "Kim", "Silva", "Novak"]
TAX_RATES = [None, "0", "0.0875", "0.19", "0.07", "0.2", "0.055"]
NEXT_STATUS = {"draft": "order.submitted", "pending": "order.confirmed"}
NEXT_STATUS |= {"confirmed": "order.started", "in_progress": "order.completed"}
STATUS_AFTER = {"order.submitted": "pending", "order.confirmed": "confirmed"}
STATUS_AFTER |= {"order.started": "in_progress", "order.completed": "completed"}

# Relative frequency of each kind of step.
MIX = {
    "order.created": 14,
    "order.item_added": 10,
    "order.item_updated": 10,
    "order.item_removed": 4,
    "order.details_changed": 6,
    "status": 23,
    "order.cancelled": 2,
    "order.payment_status_changed": 8,
    "participant.new": 2,
    "participant.rename": 3,
}
# Types this build ignores (they advance seq only): give them a weight in `mix` to draw them. The
# participant one goes to a new participant half the time, which is then known first from it.
UNKNOWN_TYPE = "order.note_added"
UNKNOWN_PARTICIPANT_TYPE = "participant.tagged"
EDGE_PARTICIPANT = 2  # with variety, this participant of each tenant has the id 2^63-1

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class Generated:
    """One event as published (`line`) and the aggregate position it brings the read model to."""

    line: bytes
    tenant: str
    kind: str
    aggregate_id: int
    seq: int


@dataclass(eq=False)  # identity: `list.remove` finds the very order
class _Order:
    tenant: str
    id: int
    status: str = "draft"
    items: list[int] = field(default_factory=list)
    next_item: int = 1


class Workload:
    """An endless, seeded stream of valid events across a few tenants.

    `mix` weighs the kinds of step; `pace` stretches the time between events (1: 10 ms to 2 s);
    `numbered` is the share of orders given an order number at creation; with `orders_per_tenant`
    (one number, or one per tenant) each tenant gets exactly that many orders (`full` tells when
    all have them), and `settle` brings the participants that orders name but that have had no
    event yet. `variety` is the chance, at each choice, of a value at the edge of the contract
    instead of the realistic one; with it, times are whole seconds (events share instants), some
    orders are created at the same instant as the tenant's previous one, each tenant's last order
    has the id 2^63-1, some orders name participants that never get an event, and some events
    follow an order's completion.
    """

    def __init__(
        self,
        seed: int = 42,
        active_orders: int = 4000,
        *,
        tenants: tuple[str, ...] = TENANTS,
        mix: dict[str, int] = MIX,
        pace: float = 1,
        numbered: float = 0,
        orders_per_tenant: int | tuple[int, ...] | None = None,
        variety: float = 0,
    ):
        self.rng = random.Random(seed)
        self.seqs: dict[tuple[str, str, int], int] = {}
        self.active: list[_Order] = []
        self.active_limit = active_orders
        self.tenants, self.pace, self.numbered, self.variety = tenants, pace, numbered, variety
        self.quota = _quota(tenants, orders_per_tenant)
        self.next_order = dict.fromkeys(tenants, 1)
        self.participants = dict.fromkeys(tenants, 0)  # ids 1..n have had an event
        self.named = dict.fromkeys(tenants, 0)  # the highest participant id an order named
        self.clock = datetime(2024, 1, 1, 8, tzinfo=UTC)
        self.created: dict[str, datetime] = {}  # the instant of each tenant's latest order
        self.count = 0
        self._kinds = list(mix)
        self._cumulative = list(itertools.accumulate(mix.values()))

    @property
    def full(self) -> bool:
        """Whether every tenant has its `orders_per_tenant` orders (never without a quota)."""
        return self.quota is not None and not self._open_tenants()

    def _open_tenants(self) -> tuple[str, ...]:
        if self.quota is None:
            return self.tenants
        return tuple(t for t in self.tenants if self.next_order[t] <= self.quota[t])

    def settle(self) -> Iterator[Generated]:
        """The first event of every participant an order named but that has had none yet."""
        for tenant in self.tenants:
            while self.participants[tenant] < self.named[tenant]:
                self._tick()
                yield self._participant("participant.new", tenant=tenant)

    def events(self, n: int) -> Iterator[Generated]:
        """The next n events."""
        for _ in range(n):
            yield self.next()

    def next(self) -> Generated:
        """The next event."""
        self._tick()
        step = self.rng.choices(self._kinds, cum_weights=self._cumulative)[0]
        if step.startswith("participant.") or (self.full and not self.active):
            return self._participant(step)
        if (step == "order.created" or not self.active) and not self.full:
            return self._create()
        if step == "order.created":
            step = "status"
        order = self.active[self.rng.randrange(len(self.active))]
        return self._order_event(order, step)

    def _tick(self) -> None:
        self.count += 1
        self.clock += timedelta(milliseconds=self.rng.randint(10, 2000)) * self.pace

    def _stray(self) -> bool:
        """Whether this choice takes a value at the edge (never draws without variety, so the
        realistic stream stays the same for a seed)."""
        return self.variety > 0 and self.rng.random() < self.variety

    def _pid(self, pid: int | None) -> int | None:
        return edges.BIGGEST_ID if self.variety and pid == EDGE_PARTICIPANT else pid

    # ---- events ------------------------------------------------------------------------

    def _envelope(self, type_: str, tenant: str, kind: str, agg: int, data: dict) -> Generated:
        key = (tenant, kind, agg)
        seq = self.seqs.get(key, 0) + 1
        self.seqs[key] = seq
        if self.variety:
            at = edges.instant(self.rng, self.clock)
        else:
            at = self.clock.isoformat().replace("+00:00", "Z")
        envelope = {
            "id": f"evt_{self.count:09d}",
            "type": type_,
            "tenant": tenant,
            "aggregate_id": agg,
            "seq": seq,
            "at": at,
            "data": data,
        }
        return Generated(_encoder.encode(envelope), tenant, kind, agg, seq)

    def _participant(self, step: str, tenant: str | None = None) -> Generated:
        tenant = tenant or self.rng.choice(self.tenants)
        unknown = step.startswith("participant.") and step not in (
            "participant.new",
            "participant.rename",
        )
        if (
            step == "participant.new"
            or not self.participants[tenant]
            or (unknown and self.rng.random() < 0.5)
        ):
            self.participants[tenant] += 1
            pid = self.participants[tenant]
        else:
            pid = self.rng.randint(1, self.participants[tenant])
        if unknown:
            data: dict = {"tag": "vip"}
        elif self._stray():
            data = {"name": f"{self.rng.choice(edges.NAMES)} {pid}"}
            if self.rng.random() < 0.5:
                data["email"] = self.rng.choice([f"p{pid}@example.com", None])
        else:
            name = f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"
            email = f"{name.lower().replace(' ', '.')}@example.com"
            data = {"name": name, "email": None if self.rng.random() < 0.1 else email}
        type_ = step if unknown else "participant.upserted"
        return self._envelope(type_, tenant, "participant", self._pid(pid), data)

    def _item(self, order: _Order) -> dict:
        item_id = order.next_item
        order.next_item += 1
        order.items.append(item_id)
        if self._stray():
            return edges.item(self.rng, item_id)
        item = {
            "id": item_id,
            "name": self.rng.choice(NAMES),
            "quantity": self.rng.randint(1, 5),
            "unit_price": f"{self.rng.randint(100, 50000) / 100:.2f}",
            "service_id": self.rng.choice(SERVICES),
        }
        rate = self.rng.choice(TAX_RATES)
        if rate is not None:
            item["tax_rate"] = rate
        return item

    def _create(self) -> Generated:
        tenant = self.rng.choice(self._open_tenants())
        oid = self.next_order[tenant]
        self.next_order[tenant] += 1
        if self.variety and self.quota and oid == self.quota[tenant]:
            oid = edges.BIGGEST_ID
        order = _Order(tenant, oid)
        if tenant in self.created and self._stray():
            self.clock = self.created[tenant]  # created at the same instant as the previous one
        self.created[tenant] = self.clock
        known = self.participants[tenant]
        # Mostly known participants, some not seen yet (their event comes later), a few none.
        participant = self.rng.randint(1, known + 20) if self.rng.random() < 0.9 else None
        if participant and self._stray():
            participant += edges.GHOSTS  # never gets an event
        else:
            self.named[tenant] = max(self.named[tenant], participant or 0)
        data = {
            "type": self.rng.choice(("booking", "booking", "sale", "enquiry")),
            "currency": self.rng.choice(("EUR", "USD", "GBP")),
            "event_key": f"evt-{self.rng.randint(1, 200)}",
            "participant_id": self._pid(participant),
            "location_id": f"loc_{self.rng.randint(1, 30)}",
            "scheduled_at": (self.clock + timedelta(days=self.rng.randint(1, 30))).isoformat(),
            "duration": self.rng.choice((30, 45, 60, 90)),
            "notes": "First-time customer" if self.rng.random() < 0.2 else None,
            "items": [self._item(order) for _ in range(self.rng.randint(1, 4))],
        }
        if self.numbered and self.rng.random() < self.numbered:
            data["order_number"] = f"SO-{oid:06d}"
        if self._stray():
            data = edges.created(self.rng, data)
        self.active.append(order)
        if len(self.active) > self.active_limit:
            self.active.pop(0)
        return self._envelope("order.created", tenant, "order", oid, data)

    def _order_event(self, order: _Order, step: str) -> Generated:
        type_, data = self._order_change(order, step)
        if order.status in ("completed", "cancelled") and not self._stray():
            self.active.remove(order)
        return self._envelope(type_, order.tenant, "order", order.id, data)

    def _order_change(self, order: _Order, step: str) -> tuple[str, dict]:
        if step in ("order.item_updated", "order.item_removed") and not order.items:
            step = "order.item_added"
        if step.startswith("order.item_") and self._stray():
            return step, self._item_at_edge(order, step)
        rng = self.rng
        match step:
            case "order.item_added":
                return step, {"item": self._item(order)}
            case "order.item_updated":
                change = rng.choice(({"quantity": rng.randint(1, 9)}, {"name": "Updated line"}))
                if rng.random() < 0.3:
                    change["unit_price"] = rng.randint(100, 90000) / 100
                return step, {"item_id": rng.choice(order.items), **change}
            case "order.item_removed":
                item_id = order.items.pop(rng.randrange(len(order.items)))
                return step, {"item_id": item_id}
            case "order.details_changed":
                return step, self._details(order)
            case "order.payment_status_changed":
                status = rng.choice(("paid", "paid", "paid", "failed", "refunded", "pending"))
                return step, {"payment_status": status}
            case "order.cancelled":
                order.status = "cancelled"
                reason = rng.choice(({}, {"reason": None})) if self._stray() else None
                return step, {"reason": "Customer request"} if reason is None else reason
            case "status":
                return self._advance(order)
            case _:
                return step, {"text": "an event type this build ignores"}

    def _item_at_edge(self, order: _Order, step: str) -> dict:
        """An item added again (replaced), updated in any fields, or an unknown item id."""
        if step == "order.item_added" and order.items:
            return {"item": edges.item(self.rng, self.rng.choice(order.items))}
        if step == "order.item_added":
            return {"item": self._item(order)}
        item_id = self.rng.choice([*order.items, order.next_item])  # next_item: none such
        if step == "order.item_updated":
            return edges.item_change(self.rng, item_id)
        if item_id in order.items:
            order.items.remove(item_id)
        return {"item_id": item_id}

    def _details(self, order: _Order) -> dict:
        rng = self.rng
        if self._stray():
            return dict(rng.choice(edges.DETAIL_CHANGES))
        return rng.choice(
            (
                {"notes": "Call before arrival"},
                {"duration": rng.choice((30, 60, 120))},
                {"location_id": f"loc_{rng.randint(1, 30)}"},
                {"scheduled_at": (self.clock + timedelta(days=3)).isoformat()},
                {"participant_id": self._named(order.tenant)},
            )
        )

    def _named(self, tenant: str) -> int | None:
        pid = self.rng.randint(1, self.participants[tenant] + 1)
        self.named[tenant] = max(self.named[tenant], pid)
        return self._pid(pid)

    def _advance(self, order: _Order) -> tuple[str, dict]:
        """The next status; with variety, sometimes any status (the projector does not judge)."""
        if order.status in NEXT_STATUS and not self._stray():
            type_ = NEXT_STATUS[order.status]
        else:
            type_ = self.rng.choice(edges.STATUS_EVENTS)
        order.status = STATUS_AFTER[type_]
        if type_ != "order.submitted":
            return type_, {}
        if self._stray():
            return type_, self.rng.choice(({}, {"order_number": None}))
        return type_, {"order_number": f"SO-{order.id:06d}"}


def _quota(tenants: tuple[str, ...], orders: int | tuple[int, ...] | None) -> dict[str, int] | None:
    if orders is None:
        return None
    counts = (orders,) * len(tenants) if isinstance(orders, int) else orders
    return dict(zip(tenants, counts, strict=True))


def shard(events: Iterable[Generated], streams: tuple[str, ...]) -> dict[str, list[Generated]]:
    """The events of each stream, in order, under the sharding rule of events.md."""
    by_stream: dict[str, list[Generated]] = {s: [] for s in streams}
    for e in events:
        by_stream[stream_for(streams, e.tenant, e.kind, e.aggregate_id)].append(e)
    return by_stream
