"""Faults as one layer over any `History`: redeliveries, reorderings (gaps that fill) and poison.

The valid events stay what they were, only their delivery changes: a fold that follows events.md
gives the same state for the faulty history as for the original one.
"""

from __future__ import annotations

import itertools
import json
import random

from services.histories.history import History

POISON_IDS = 9_000_001  # the aggregates of `poison_entries`: no valid event of a history is on them

# Types whose payload rules `BAD_DATA` breaks (for the others its keys are unknown, so ignored).
REFUSED_DATA = {
    "order.created",
    "order.item_added",
    "order.item_updated",
    "order.item_removed",
    "order.payment_status_changed",
    "participant.upserted",
}
BAD_DATA = {"item": {"id": 0}, "type": "barter", "payment_status": "x", "name": 5}


def with_faults(
    history: History,
    seed: int,
    *,
    duplicates: float = 0,
    swaps: float = 0,
    reverse: int = 0,
    poison: int = 0,
) -> History:
    """The history delivered with faults: a share `duplicates` of its events delivered again
    later, a share `swaps` swapped with an earlier neighbour of the same aggregate, `reverse`
    aggregates delivered last seq first, and `poison` lines (half of them invalid copies of
    valid events, half entries of every kind the projector must dead-letter)."""
    rng = random.Random(seed)
    events = _swapped(list(history.events), rng, swaps)
    events = _reversed(events, rng, reverse)
    events = _redelivered(events, rng, duplicates)
    return History(events, history.poison + _poison(history.events, rng, poison))


def _key(event: dict) -> tuple:
    return (event["tenant"], event["type"].partition(".")[0], event["aggregate_id"])


def _swapped(events: list[dict], rng: random.Random, share: float) -> list[dict]:
    for i in range(len(events) - 1, 0, -1):
        if rng.random() < share:
            a = _key(events[i])
            j = next((j for j in range(i - 1, max(i - 20, -1), -1) if _key(events[j]) == a), None)
            if j is not None:
                events[i], events[j] = events[j], events[i]
    return events


def _reversed(events: list[dict], rng: random.Random, count: int) -> list[dict]:
    """`count` aggregates delivered last seq first: each waits as a gap until its first comes."""
    if not count:
        return events
    places: dict[tuple, list[int]] = {}
    for i, e in enumerate(events):
        places.setdefault(_key(e), []).append(i)
    for key in rng.sample(sorted(places), count):
        at = places[key]
        for i, e in zip(at, [events[i] for i in reversed(at)], strict=True):
            events[i] = e
    return events


def _redelivered(events: list[dict], rng: random.Random, share: float) -> list[dict]:
    """The events, and a share of them again, each copy somewhere after its original."""
    copies = rng.sample(range(len(events)), round(share * len(events)))
    placed = [(float(i), e) for i, e in enumerate(events)]
    placed += [(rng.uniform(i, len(events)), events[i]) for i in copies]
    return [e for _, e in sorted(placed, key=lambda p: p[0])]


def _poison(events: list[dict], rng: random.Random, count: int) -> list[str]:
    """`count` poison lines: invalid copies of events, and entries of kinds spread evenly."""
    copies = count // 2 if events else 0
    tenants = list(dict.fromkeys(e["tenant"] for e in events)) or ["acme"]
    kinds = [line for lines in zip(*map(poison_entries, tenants), strict=True) for line in lines]
    stride = max(len(kinds) // max(count - copies, 1), 1)
    lines = [kinds[n * stride % len(kinds)] for n in range(count - copies)]
    return lines + [_broken(rng.choice(events), rng) for _ in range(copies)]


def _broken(event: dict, rng: random.Random) -> str:
    """An invalid copy of a valid event (same tenant, aggregate and seq): it must change nothing."""
    broken = json.loads(json.dumps(event))
    fault = rng.choice(["at", "type", "tenant", "data"])
    if fault == "data" and broken["type"] not in REFUSED_DATA:
        fault = "at"
    if fault == "at":
        broken["at"] = "yesterday"
    elif fault == "type":
        broken["type"] = "invoice." + broken["type"].partition(".")[2]
    elif fault == "tenant":
        broken["tenant"] = broken["tenant"].upper()
    else:
        broken["data"] = BAD_DATA
    return json.dumps(broken)


def poison_entries(tenant: str, first_id: int = POISON_IDS) -> list[str]:
    """One entry of each kind the projector must dead-letter, for `tenant`; each well-formed
    envelope on an aggregate of its own from `first_id`, so nothing waits behind it."""
    ids = itertools.count(first_id)

    def envelope(type_: str, data: dict, **fields: object) -> str:
        agg = next(ids)
        base = {"id": f"poison-{tenant}-{agg}", "type": type_, "tenant": tenant}
        base |= {"aggregate_id": agg, "seq": 1, "at": "2024-01-01T00:00:00Z", "data": data}
        return json.dumps(base | fields)

    sale = {"type": "sale", "currency": "USD"}
    item = {"id": 1, "name": "x", "quantity": 1, "unit_price": "1"}
    return [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"hello": "an object that is not an envelope"}),
        '{"type": "order.created"}',
        envelope("invoice.created", {}),
        envelope("order.created", sale, tenant=tenant.upper()),
        envelope("order.created", sale, aggregate_id=0),
        envelope("order.created", sale, at="yesterday"),
        envelope("order.created", {"type": "sale", "currency": "usd"}),
        envelope("order.created", {"type": "barter", "currency": "EUR"}),
        envelope("order.created", sale | {"participant_id": "7"}),
        envelope("order.created", sale | {"items": [item | {"unit_price": "1.001"}]}),
        envelope("order.created", sale | {"items": [item | {"quantity": 0}]}),
        envelope("order.item_added", {"item": item | {"tax_rate": "2"}}, seq=2),
        envelope("participant.upserted", {}),
    ]
