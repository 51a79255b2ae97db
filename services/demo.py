"""The demo history of `orderview dev`: the realistic workload of services.histories, bounded.

Pure: returns the `event` values (JSON bytes) in publishing order; nothing here does I/O. Two
tenants with exactly `ORDERS_PER_TENANT` orders each, spread over about half a year; per aggregate,
seqs run 1, 2, 3… in time order; participants are renamed, some orders are created before their
participant's first event, a few orders are numbered at creation, a few events are of an unknown
`order.*` type, a few are delivered twice, and a few entries are poison (each on an aggregate of
its own, so nothing waits behind it).
"""

from __future__ import annotations

import random

from services.histories import MIX, UNKNOWN_TYPE, History, Workload, with_faults

TENANTS = ("acme", "globex")
ORDERS_PER_TENANT = 2000
SEED = 20240120
PACE = 600  # 10 ms to 2 s between events, stretched to 6 s to 20 min: about half a year
TAIL = 4000  # events after the last order is created, so the newest orders move on too
REDELIVERED = 0.0002  # about 6 of the 28 000 events delivered twice
POISON = 10


def demo_history(seed: int = SEED, tenants: tuple[str, ...] = TENANTS) -> list[bytes]:
    """Every `event` value of the demo, in publishing order; the same for the same seed."""
    workload = Workload(
        seed,
        active_orders=500,  # fewer orders in flight than the benchmarks: most reach an end
        tenants=tenants,
        mix=MIX | {UNKNOWN_TYPE: 1},
        pace=PACE,
        numbered=0.3,
        orders_per_tenant=ORDERS_PER_TENANT,
    )
    history = with_faults(History.of(workload, TAIL), seed, duplicates=REDELIVERED, poison=POISON)
    return [line.encode() for line in history.lines(random.Random(seed))]
