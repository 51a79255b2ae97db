"""Rebuild speed: `orderview rebuild` of a realistic history beside the raw ceiling, peak RSS.

    .venv/bin/python -m benchmarks.rebuild [--sizes 200000,1000000]

For each size, in a database and stream keys of its own (removed at the end), on the machine's
PostgreSQL and Redis:

1. ceiling: the projector benchmark's (XREADGROUP COUNT 1000 + one narrow unnest upsert + XACK).
2. rebuild: the real `orderview rebuild --yes` in a child process, from its start to its exit
   (replay, index build, ANALYZE, swap, old schema dropped); peak RSS is its VmHWM.
3. Redis memory per entry of the stream (MEMORY USAGE, all samples / XLEN), for the README's
   retention section.
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
    bench_environment,
    measure_ceiling,
    publish,
    reset_read_model,
)
from projections.tables import ORDERS  # noqa: E402
from services.histories import Workload  # noqa: E402


async def run_rebuild(bench: Bench, stream: str) -> tuple[float, int, str]:
    """(seconds, VmHWM in kB, last output line) of `orderview rebuild --yes` on `stream`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    env |= {
        "ORDERVIEW_DATABASE_URL": bench.database_url,
        "ORDERVIEW_REDIS_URL": bench.redis_url,
        "ORDERVIEW_STREAMS": stream,
        "ORDERVIEW_LOG_LEVEL": "WARNING",
    }
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderview.cli", "rebuild", "--yes", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    hwm = 0
    waiting = asyncio.create_task(proc.communicate())
    while not waiting.done():
        hwm = max(hwm, _hwm_kb(proc.pid))
        await asyncio.wait([waiting], timeout=0.1)
    out, err = waiting.result()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"rebuild failed: {err.decode()[-2000:]}")
    return seconds, hwm, out.decode().strip().splitlines()[-1]


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


async def one_size(bench: Bench, size: int, seed: int) -> dict:
    stream = bench.stream(f"rebuild-{size}")
    await reset_read_model(bench)
    await publish(bench, stream, Workload(seed).events(size), size)
    memory = await bench.redis.memory_usage(stream, samples=0)
    ceiling = await measure_ceiling(bench, stream, "ceiling", size)
    await reset_read_model(bench)
    seconds, hwm_kb, summary = await run_rebuild(bench, stream)
    orders = await bench.pool.fetchval(f"SELECT count(*) FROM {ORDERS}")
    await bench.redis.delete(stream)
    result = {
        "size": size,
        "ceiling": ceiling,
        "rebuild": size / seconds,
        "seconds": seconds,
        "hwm_mb": hwm_kb / 1024,
        "bytes_per_entry": memory / size,
        "orders": orders,
    }
    say(
        f"  {size:,} events: ceiling {ceiling:,.0f} ev/s, rebuild {result['rebuild']:,.0f} ev/s "
        f"({seconds:.1f} s, {orders:,} orders), ratio {result['rebuild'] / ceiling:.2f}x, "
        f"peak RSS {result['hwm_mb']:.0f} MB, Redis {result['bytes_per_entry']:.0f} B/entry"
    )
    say(f"    {summary}")
    return result


async def run(args: argparse.Namespace) -> None:
    async with bench_environment(args) as bench:
        bench.batch_size = 1000
        say(f"machine: {await describe_machine(bench.pool, bench.redis)}")
        say(
            f"workload: services.histories.Workload seed {args.seed}; rebuild = `orderview rebuild --yes`"
        )
        results = [await one_size(bench, size, args.seed) for size in args.sizes]
        say("")
        say("results (targets: rebuild >= 1.0x ceiling, peak RSS <= 300 MB)")
        for r in results:
            say(
                f"  {r['size']:>9,}: rebuild/ceiling {r['rebuild'] / r['ceiling']:.2f}x "
                f"({r['rebuild']:,.0f} / {r['ceiling']:,.0f} ev/s), peak RSS {r['hwm_mb']:.0f} MB, "
                f"Redis {r['bytes_per_entry']:.0f} B/entry"
            )


def main(argv: list[str] | None = None) -> None:
    p = options("benchmarks.rebuild", __doc__)
    p.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[200_000, 1_000_000],
        help="history sizes, comma-separated (default 200000,1000000)",
    )
    # asyncio's loop, as the README's rebuild numbers (and their ceilings) were measured.
    run_main(run, p, argv, uvloop=False)


if __name__ == "__main__":
    main()
