"""Projector scaling: events/s of 1, 2 and 4 projector processes on 8 shards and one PostgreSQL,
beside the schema's own write cost (the orders upsert alone, as in benchmarks/projector.py).

    .venv/bin/python -m benchmarks.scaling [--events 100000] [--processes 1,2,4] [--shards 8]

One workload is published once, routed to the shards by the sharding rule of events.md, and once
more to one unsharded stream for the upsert-alone measure. Each process count drains the whole
backlog through a fresh consumer group into emptied tables: real `orderview projector` processes,
each running one consumer per shard, timed from the first delivery to nothing pending or
undelivered on any shard. The database and stream keys are the run's own, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import describe_machine, options, run_main, say  # noqa: E402
from benchmarks.projector import (  # noqa: E402
    Bench,
    Progress,
    ProjectorProcess,
    bench_environment,
    group_state,
    measure_orders_upsert,
    publish,
    reset_read_model,
)
from projections.tables import ORDERS, PARTICIPANTS  # noqa: E402
from services.histories import Workload, shard  # noqa: E402


async def drain_all(bench: Bench, procs: list[ProjectorProcess], streams, group, total) -> float:
    """Seconds from the group's first delivery on any shard until every shard is settled."""
    progress = Progress(f"{len(procs)} projector(s)", total)
    first = None
    while True:
        for proc in procs:
            proc.check_alive()
        now = time.perf_counter()
        left = delivered = 0
        for stream in streams:
            state = await group_state(bench, stream, group)
            if state is None:
                left += await bench.redis.xlen(stream)
                continue
            delivered += state["pending"] + (state.get("entries-read") or 0)
            left += (state["lag"] if state["lag"] is not None else total) + state["pending"]
        if first is None and delivered:
            first = now
        progress.set(total - left)
        if first is not None and left == 0:
            progress.close()
            return now - first
        await asyncio.sleep(0.01)


async def applied(bench: Bench) -> int:
    """Σ seq over both tables: the number of events folded (every event applied once)."""
    return int(
        await bench.pool.fetchval(
            f"SELECT (SELECT coalesce(sum(seq), 0) FROM {ORDERS})"
            f" + (SELECT coalesce(sum(seq), 0) FROM {PARTICIPANTS})"
        )
    )


async def wal_lsn(bench: Bench) -> str:
    return await bench.pool.fetchval("SELECT pg_current_wal_lsn()::text")


async def measure_processes(
    bench: Bench, streams: list[str], count: int, total: int
) -> tuple[float, float]:
    """Events/s of `count` projector processes draining the sharded backlog, and WAL bytes per
    event they made PostgreSQL write (the whole server's WAL: quiet neighbours assumed)."""
    await reset_read_model(bench)
    group = f"scaling-{count}"
    start = await wal_lsn(bench)
    # Several processes split an aggregate's events between consumers of a shard: the later one
    # waits (a gap) for the earlier one's commit. On a loaded machine that can pass the default
    # 30 s gap timeout; this measures throughput, so gaps wait as long as they need.
    extra = {"ORDERVIEW_GAP_TIMEOUT": "3600"}
    dead = sum([await bench.redis.xlen(f"{s}:dlq") for s in streams])
    procs = [
        ProjectorProcess(bench, ",".join(streams), group, f"p{i}", extra) for i in range(count)
    ]
    try:
        seconds = await drain_all(bench, procs, streams, group, total)
    finally:
        codes = [await p.stop() for p in procs]
    wal = await bench.pool.fetchval(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)", start
    )
    folded = await applied(bench)
    dead = sum([await bench.redis.xlen(f"{s}:dlq") for s in streams]) - dead
    state = "ok" if folded == total and not dead and set(codes) == {0} else "MISMATCH"
    say(f"    {count} process(es): Σseq {folded:,} of {total:,}, {dead} dead letters ({state}), "
        f"exit codes {codes}")  # fmt: skip
    return total / seconds, float(wal) / total


async def run(args: argparse.Namespace) -> None:
    async with bench_environment(args) as bench:
        bench.batch_size = args.batch_size
        say(f"machine: {await describe_machine(bench.pool, bench.redis)}")
        say(f"workload: {args.events:,} events, seed {args.seed}, {args.shards} shards, "
            f"batch {args.batch_size}, processes {args.processes}")  # fmt: skip
        say("note: every process competes with PostgreSQL (and Redis) for the same cores; on a "
            "2-core machine the curve flattens from 2 processes on")  # fmt: skip
        events = list(Workload(args.seed).events(args.events))
        streams = [bench.stream(f"orders:events:{i}") for i in range(args.shards)]
        by_stream = shard(events, tuple(streams))
        for stream, share in by_stream.items():
            await publish(bench, stream, share, len(share))
        whole = bench.stream("orders:events")
        await publish(bench, whole, events, len(events))
        del events, by_stream

        await reset_read_model(bench)
        upsert = await measure_orders_upsert(bench, whole, args.events)
        await bench.redis.delete(whole)
        results = {}
        for count in args.processes:
            results[count] = await measure_processes(bench, streams, count, args.events)
        report(args, upsert, results)


def report(args: argparse.Namespace, upsert: float, results: dict) -> None:
    one = (results.get(1) or next(iter(results.values())))[0]
    say("")
    say(f"results ({args.shards} shards, {args.events:,} events, load average now "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())})")  # fmt: skip
    say(f"  orders upsert alone (schema's write cost, one connection): {upsert:,.0f} ev/s")
    for count, (speed, wal) in results.items():
        say(f"  {count} projector process(es): {speed:,.0f} ev/s = {speed / one:.2f}x one process, "
            f"{speed / upsert:.0%} of the upsert alone; WAL {wal:,.0f} B/event "
            f"({speed * wal / 2**20:,.1f} MiB/s)")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = options("benchmarks.scaling", __doc__)
    p.add_argument("--events", type=int, default=100_000, help="backlog size (default 100000)")
    p.add_argument(
        "--processes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="process counts (default 1,2,4)",
    )
    p.add_argument("--shards", type=int, default=8, help="stream shards (default 8)")
    p.add_argument("--batch-size", type=int, default=1000, help="COUNT and batch (default 1000)")
    run_main(run, p, argv)


if __name__ == "__main__":
    main()
