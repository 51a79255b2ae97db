"""How long a cached answer would live: the projector's invalidations under a steady event rate.

    .venv/bin/python -m benchmarks.cache_churn [--rate 1000] [--seconds 20]

Publishes the realistic workload (`services/histories`, 4 tenants) at a steady rate to a real
projector (in this process, on a database and stream of its own, dropped after) and listens to its
cache notifications. From the recorded invalidations it replays requests arriving at random at a
given rate per cached key and prints the hit ratio a cache would get:

- a get by id, invalidated when its order (or the participant it names) changes;
- a list page, which any change of its tenant may alter (an order entering, leaving or moving in
  a filtered, sorted page cannot be told from the notification without running the query).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as redis

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine, options, run_main  # noqa: E402
from orderview.settings import load_settings  # noqa: E402
from projections.invalidation import CHANNEL  # noqa: E402
from projections.migrate import migrate  # noqa: E402
from services.histories import Workload  # noqa: E402
from services.projector import run_projector  # noqa: E402


async def record(args: argparse.Namespace, url: str) -> tuple[list[tuple[float, dict]], list]:
    """Run the projector under a steady rate; the notifications received, with their time."""
    stream = f"bench:churn:{secrets.token_hex(4)}"
    settings = load_settings(
        {"ORDERVIEW_DATABASE_URL": url, "ORDERVIEW_REDIS_URL": args.redis_url,
         "ORDERVIEW_STREAMS": stream, "ORDERVIEW_METRICS_PORT": "0", "ORDERVIEW_BLOCK_MS": "100"}
    )  # fmt: skip
    received: list[tuple[float, dict]] = []
    listener = await asyncpg.connect(url)
    await listener.add_listener(
        CHANNEL, lambda *a: received.append((time.monotonic(), json.loads(a[3])))
    )
    client = redis.from_url(args.redis_url)
    stopping = asyncio.Event()
    projector = asyncio.create_task(run_projector(settings, stopping))
    events = Workload(args.seed).events(args.rate * args.seconds)
    published = []
    start = time.monotonic()
    try:
        for n, generated in enumerate(events):
            due = start + n / args.rate
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            await client.xadd(stream, {"event": generated.line})
            published.append(generated)
        await asyncio.sleep(1)
    finally:
        stopping.set()
        await projector
        await client.delete(stream, f"{stream}:dlq")
        await client.aclose()
        await listener.close()
    return received, published


def replay(times: list[float], span: float, rate: float, rng: random.Random) -> tuple[int, int]:
    """Requests at `rate`/s at random times over `span` s on one key; (hits, requests). A request
    hits when an earlier one came after the key's last invalidation (`times`, sorted)."""
    count = max(1, int(rate * span))
    requests = sorted(rng.uniform(0, span) for _ in range(count))
    hits, i, filled = 0, 0, False
    for at in requests:
        while i < len(times) and times[i] <= at:
            i, filled = i + 1, False
        hits += filled
        filled = True
    return hits, count


def report(received: list[tuple[float, dict]], args: argparse.Namespace) -> None:
    t0 = received[0][0] if received else 0.0
    span = (received[-1][0] - t0) if received else 1.0
    tenants: dict[str, list[float]] = {}
    orders: dict[tuple[str, int], list[float]] = {}
    for at, message in received:
        tenant = message.get("t")
        tenants.setdefault(tenant, []).append(at - t0)
        for order in message.get("o", ()):
            orders.setdefault((tenant, order), []).append(at - t0)
    print(f"{len(received)} notifications in {span:.1f} s ({len(received) / span:.0f}/s), "
          f"{sum(len(m.get('o', ())) for _, m in received)} order ids named")  # fmt: skip
    for tenant, times in sorted(tenants.items(), key=lambda kv: str(kv[0])):
        print(f"  tenant {tenant}: {len(times) / span:.0f} invalidations/s "
              f"(a tenant-wide entry lives {1000 * span / max(1, len(times)):.0f} ms on average)")  # fmt: skip
    rng = random.Random(1)
    print("hit ratio of a cache, by request rate per cached key:")
    for rate in (1, 10, 100, 1000):
        hits = total = 0
        for times in tenants.values():
            h, n = replay(times, span, rate, rng)
            hits, total = hits + h, total + n
        print(f"  list page at {rate:>4} req/s per (tenant, page): {hits / total:.0%}")
    # Gets: the orders changed at all (the others never invalidate), at one request/s each.
    sample = rng.sample(sorted(orders), min(200, len(orders)))
    for rate in (1, 10):
        hits = total = 0
        for key in sample:
            h, n = replay(orders[key], span, rate, rng)
            hits, total = hits + h, total + n
        print(f"  get of an order that changed, at {rate:>4} req/s: {hits / total:.0%}")


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    name = f"orderview_churn_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(args.database_url)._replace(path=f"/{name}"))
    try:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        print(f"publishing {args.rate} events/s for {args.seconds} s to a real projector")
        received, _ = await record(args, url)
        report(received, args)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = options("benchmarks.cache_churn", __doc__)
    parser.add_argument("--rate", type=int, default=1000, help="events/s (default 1000)")
    parser.add_argument("--seconds", type=int, default=20)
    run_main(main, parser, uvloop=False)  # asyncio's loop, as its numbers were measured
