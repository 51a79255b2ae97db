"""A bounded history drawn from a `Workload`, as the demo and the tests publish it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import msgspec

from services.histories.workload import (
    MIX,
    UNKNOWN_PARTICIPANT_TYPE,
    UNKNOWN_TYPE,
    Workload,
)

VARIETY = 0.3  # the tests' share of values at the edges of the contract
# About five events an order (the realistic mix has six), a few of them of unknown types.
TESTS_MIX = MIX | {"order.created": 18, UNKNOWN_TYPE: 2, UNKNOWN_PARTICIPANT_TYPE: 2}


@dataclass
class History:
    """Valid events in publish order, and poison lines (raw strings) kept apart."""

    events: list[dict] = field(default_factory=list)
    poison: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, workload: Workload, tail: int = 0) -> History:
        """The workload's events until every tenant has its orders, `tail` more, then the first
        event of each participant an order named that has had none."""
        if workload.quota is None:
            raise ValueError("a bounded history needs a workload with orders_per_tenant")
        lines = []
        while not workload.full:
            lines.append(workload.next().line)
        lines.extend(e.line for e in workload.events(tail))
        lines.extend(e.line for e in workload.settle())
        return cls([msgspec.json.decode(line) for line in lines])

    def lines(self, rng: random.Random | None = None) -> list[str]:
        """Every line to publish: events in order, poison scattered among them."""
        lines = [json.dumps(e) for e in self.events]
        rng = rng or random.Random(0)
        for p in self.poison:
            lines.insert(rng.randrange(len(lines) + 1), p)
        return lines


def varied(
    seed: int, *, tenants: int | tuple[str, ...] = 2, orders: int | tuple[int, ...] = 50
) -> History:
    """The tests' history: `orders` orders for each tenant (`tenant-0`, `tenant-1`, … when
    `tenants` is a number), a share of values at the edges of the contract, unknown types of
    both kinds, interleaved at random across aggregates and tenants."""
    names = tenants if isinstance(tenants, tuple) else tuple(f"tenant-{n}" for n in range(tenants))
    count = orders * len(names) if isinstance(orders, int) else sum(orders)
    workload = Workload(
        seed,
        tenants=names,
        mix=TESTS_MIX,
        numbered=0.3,
        orders_per_tenant=orders,
        variety=VARIETY,
    )
    return History.of(workload, tail=count // 4)  # the newest orders move on too
