"""Rebuild speed: `orderview rebuild` of a realistic history beside the raw ceiling, peak RSS.

    .venv/bin/python -m benchmarks.rebuild [--sizes 200000,1000000]

For each size, in a database and stream keys of its own (removed at the end), on the machine's
PostgreSQL and Redis:

1. ceiling: the projector benchmark's (XREADGROUP COUNT 1000 + one narrow unnest upsert + XACK).
2. rebuild: the real `orderview rebuild --yes` in a child process, from its start to its exit
   (replay, index build, ANALYZE, swap, old schema dropped); peak RSS is its VmHWM, CPU its user
   and system time, and each phase's time is read from its log.
3. floor: the rebuild's Python work alone on the same entries, no I/O, in this process: decoding
   (entries.decode_entries), folding (fold.plan_batch) and rendering each order once
   (writer.render_plan), in CPU time; the entries are read beforehand, untimed. A rebuild in one
   process cannot go faster than this, whatever it does with PostgreSQL and Redis. Beside it, the
   CPU time per event of the ceiling (this process) and of the rebuild (its process): on a
   loaded machine they compare better than wall times.
4. Redis memory per entry of the stream (MEMORY USAGE, all samples / XLEN), for the README's
   retention section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
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
from projections.entries import decode_entries  # noqa: E402
from projections.fold import Plan, plan_batch  # noqa: E402
from projections.tables import ORDERS  # noqa: E402
from projections.writer import render_plan  # noqa: E402
from services.histories import Workload  # noqa: E402
from services.rebuild import WINDOW  # noqa: E402


@dataclass
class Rebuilt:
    """What a run of `orderview rebuild` took."""

    seconds: float
    cpu_seconds: float  # the child's user + system time
    hwm_kb: int
    phases: dict[str, float]  # seconds from the process's start to each phase's end
    summary: str


async def run_rebuild(bench: Bench, stream: str) -> Rebuilt:
    """`orderview rebuild --yes` on `stream` in a child process, watched from start to exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    env |= {
        "ORDERVIEW_DATABASE_URL": bench.database_url,
        "ORDERVIEW_REDIS_URL": bench.redis_url,
        "ORDERVIEW_STREAMS": stream,
        "ORDERVIEW_LOG_LEVEL": "INFO",  # the phases' lines; without a terminal, no bar
    }
    started, wall_started = time.perf_counter(), time.time()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orderview.cli", "rebuild", "--yes", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    hwm, cpu = 0, 0.0
    waiting = asyncio.create_task(proc.communicate())
    while not waiting.done():
        hwm, cpu = max(hwm, _hwm_kb(proc.pid)), max(cpu, _cpu_seconds(proc.pid))
        await asyncio.wait([waiting], timeout=0.05)
    out, err = waiting.result()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"rebuild failed: {err.decode()[-2000:]}")
    phases = _phase_ends(err.decode(), wall_started, seconds)
    return Rebuilt(seconds, cpu, hwm, phases, out.decode().strip().splitlines()[-1])


def _phase_ends(log: str, wall_started: float, seconds: float) -> dict[str, float]:
    """{phase: seconds from the start to its end}, from the rebuild's `rebuild phase` lines
    (each logged as its phase starts: the start up to `replay` is `prepare`)."""
    starts = [("prepare", 0.0)]
    for line in log.splitlines():
        if line.startswith("{") and '"rebuild phase"' in line:
            record = json.loads(line)
            at = datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
            starts.append((record["phase"], at - wall_started))
    ends = [at for _, at in starts[1:]] + [seconds]
    return {name: end for (name, _), end in zip(starts, ends, strict=True)}


def _hwm_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@dataclass
class Floor:
    """Seconds of the rebuild's Python work alone, per part, on `events` entries."""

    events: int
    orders: int
    decode: float
    fold: float
    render: float

    @property
    def rate(self) -> float:
        return self.events / (self.decode + self.fold + self.render)


async def measure_floor(bench: Bench, stream: str) -> Floor:
    """Decode and fold the stream's entries, a window at a time, then render every order once
    (as a rebuild that kept every order in memory would); only the Python calls are timed, with
    the cyclic GC paused as the rebuild pauses it."""
    orders: dict = {}
    participants: dict = {}
    timed = {"decode": 0.0, "fold": 0.0, "render": 0.0}
    events, cursor = 0, "-"
    gc.disable()
    try:
        while entries := await bench.redis.xrange(stream, cursor, "+", count=WINDOW):
            cursor = "(" + entries[-1][0].decode()
            events += len(entries)
            with _timing(timed, "decode"):
                batch = decode_entries(entries)
            with _timing(timed, "fold"):
                plan = plan_batch(list(batch.events.items()), orders, participants)
                orders.update(plan.orders)
                participants.update(plan.participants)
            del entries, batch
            gc.collect(0)
        keys = list(orders)
        for start in range(0, len(keys), WINDOW):
            chunk = Plan(orders={key: orders[key] for key in keys[start : start + WINDOW]})
            with _timing(timed, "render"):
                render_plan(chunk)
    finally:
        gc.enable()
    return Floor(events, len(orders), **timed)


@contextlib.contextmanager
def _timing(totals: dict[str, float], part: str) -> Iterator[None]:
    """Adds the CPU time of this process in the block: on a loaded machine, wall time would
    count the other processes' turns too."""
    started = time.process_time()
    yield
    totals[part] += time.process_time() - started


async def one_size(bench: Bench, size: int, seed: int) -> dict:
    stream = bench.stream(f"rebuild-{size}")
    await reset_read_model(bench)
    await publish(bench, stream, Workload(seed).events(size), size)
    memory = await bench.redis.memory_usage(stream, samples=0)
    cpu_started = time.process_time()
    ceiling = await measure_ceiling(bench, stream, "ceiling", size)
    ceiling_cpu = time.process_time() - cpu_started
    floor = await measure_floor(bench, stream)
    await reset_read_model(bench)
    rebuilt = await run_rebuild(bench, stream)
    orders = await bench.pool.fetchval(f"SELECT count(*) FROM {ORDERS}")
    await bench.redis.delete(stream)
    result = {
        "size": size,
        "ceiling": ceiling,
        "rebuild": size / rebuilt.seconds,
        "rebuilt": rebuilt,
        "floor": floor,
        "hwm_mb": rebuilt.hwm_kb / 1024,
        "bytes_per_entry": memory / size,
        "orders": orders,
    }
    say(
        f"  {size:,} events: ceiling {ceiling:,.0f} ev/s, rebuild {result['rebuild']:,.0f} ev/s "
        f"({rebuilt.seconds:.1f} s, CPU {rebuilt.cpu_seconds:.1f} s, {orders:,} orders), "
        f"ratio {result['rebuild'] / ceiling:.2f}x, peak RSS {result['hwm_mb']:.0f} MB, "
        f"Redis {result['bytes_per_entry']:.0f} B/entry"
    )
    previous = 0.0
    phases = []
    for name, end in rebuilt.phases.items():
        phases.append(f"{name} {end - previous:.1f} s")
        previous = end
    say(f"    phases: {', '.join(phases)}")
    say(
        f"    floor (Python alone, no I/O, CPU time): decode {_us(floor.decode, size)}, "
        f"fold {_us(floor.fold, size)}, render {_us(floor.render, size)} "
        f"({floor.render / floor.orders * 1e6:.0f} us/order) = {floor.rate:,.0f} ev/s, "
        f"{floor.rate / ceiling:.2f}x the ceiling"
    )
    say(
        f"    CPU per event (this process or the rebuild's; PostgreSQL and Redis not counted): "
        f"ceiling {_us(ceiling_cpu, size)}, rebuild {_us(rebuilt.cpu_seconds, size)}, "
        f"floor {_us(size / floor.rate, size)}"
    )
    say(f"    {rebuilt.summary}")
    return result


def _us(seconds: float, events: int) -> str:
    return f"{seconds / events * 1e6:.1f} us/ev"


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
                f"floor/ceiling {r['floor'].rate / r['ceiling']:.2f}x, "
                f"Redis {r['bytes_per_entry']:.0f} B/entry"
            )
        say(f"load after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


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
