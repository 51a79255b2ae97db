"""Projector speed: events/s beside the raw ceiling, freshness at a steady rate, and peak RSS.

    .venv/bin/python -m benchmarks.projector [--events 200000] [--rounds 1] [--rss-events 1000000]

Everything runs against the machine's PostgreSQL and Redis (`--database-url`, `--redis-url`) in a
database and stream keys of its own, removed at the end. The projector is the real
`orderview projector` command (one replica, settings from the environment) in a child process.

1. ceiling: XREADGROUP COUNT <batch> of the backlog, one unnest upsert of (entry id, raw event) per
   batch in a transaction, XACK; no decoding, no logic. In this process.
1b. orders upsert alone: the projector's own orders upsert (same SQL, the batches' rows rendered
   beforehand, untimed), one transaction per batch: what the read-model schema costs PostgreSQL.
2. projector: the same pre-published backlog through a fresh consumer group, from its first
   delivery to the group having nothing pending or undelivered (XINFO GROUPS polled every 10 ms).
3. freshness: events published at a steady rate while the projector runs; latency is the time the
   row with the event's seq becomes visible (polled) minus the XADD time (the entry id's ms).
   The poll that first sees a row bounds its commit from above; the poll interval is printed.
4. peak RSS: VmHWM of a projector draining a backlog of --rss-events entries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as redis
from tqdm import tqdm

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import describe_machine, options, run_main, say  # noqa: E402
from projections import writer  # noqa: E402
from projections.events import decode_event  # noqa: E402
from projections.fold import plan_batch  # noqa: E402
from projections.migrate import migrate  # noqa: E402
from projections.tables import ORDERS, PARTICIPANTS  # noqa: E402
from services.histories import Generated, Workload  # noqa: E402

CEILING_TABLE = "public.bench_ceiling"
PUBLISH_PIPELINE = 1000


# ---- reporting -------------------------------------------------------------------------------


class Progress:
    """A bar on a terminal, a line every few seconds otherwise."""

    def __init__(self, desc: str, total: int, unit: str = "ev"):
        self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, disable=None)
        self.desc, self.total, self.n, self.last = desc, total, 0, time.monotonic()

    def set(self, n: int) -> None:
        self.bar.update(n - self.n)
        self.n = n
        if self.bar.disable and time.monotonic() - self.last >= 5:
            self.last = time.monotonic()
            print(f"  {self.desc}: {n:,}/{self.total:,}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---- the environment -------------------------------------------------------------------------


@dataclass
class Bench:
    """This run's database, stream keys and clients."""

    admin_url: str
    database_url: str
    redis_url: str
    prefix: str
    pool: asyncpg.Pool
    redis: redis.Redis
    batch_size: int

    def stream(self, name: str) -> str:
        return f"{self.prefix}:{name}"


@asynccontextmanager
async def bench_environment(args: argparse.Namespace) -> AsyncIterator[Bench]:
    """Create the database (migrated) and the key prefix; drop and delete both at the end."""
    run = secrets.token_hex(4)
    name = f"orderview_bench_{run}"
    admin = await asyncpg.connect(args.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(args.database_url)._replace(path=f"/{name}"))
    client = redis.from_url(args.redis_url)
    pool = None
    try:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await conn.execute(
                f"CREATE TABLE {CEILING_TABLE} (entry_id text PRIMARY KEY, event bytea NOT NULL)"
            )
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(url, min_size=2, max_size=4)
        yield Bench(args.database_url, url, args.redis_url, f"ovbench:{run}", pool, client, 0)
    finally:
        if pool is not None:
            await pool.close()
        keys = [k async for k in client.scan_iter(match=f"ovbench:{run}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def publish(bench: Bench, stream: str, events: Iterable[Generated], total: int) -> None:
    """XADD the events in pipelines, with progress."""
    progress = Progress(f"publishing to {stream.rsplit(':', 1)[-1]}", total)
    pipe = bench.redis.pipeline(transaction=False)
    n = 0
    for event in events:
        pipe.xadd(stream, {"event": event.line})
        n += 1
        if len(pipe) >= PUBLISH_PIPELINE:
            await pipe.execute()
            progress.set(n)
    if len(pipe):
        await pipe.execute()
    progress.set(n)
    progress.close()


async def reset_read_model(bench: Bench) -> None:
    await bench.pool.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}, {CEILING_TABLE}")
    await bench.pool.execute(f"VACUUM ANALYZE {ORDERS}")


# ---- 1. the raw ceiling ----------------------------------------------------------------------

_CEILING_UPSERT = f"""
INSERT INTO {CEILING_TABLE} (entry_id, event)
SELECT * FROM unnest($1::text[], $2::bytea[])
ON CONFLICT (entry_id) DO UPDATE SET event = EXCLUDED.event
"""


async def measure_ceiling(bench: Bench, stream: str, group: str, total: int) -> float:
    """Events/s of read + one unnest upsert per batch + XACK, no logic."""
    await bench.redis.xgroup_create(stream, group, id="0")
    progress = Progress("ceiling", total)
    done = 0
    started = time.perf_counter()
    async with bench.pool.acquire() as conn:
        while done < total:
            reply = await bench.redis.xreadgroup(
                group, "ceiling", {stream: ">"}, count=bench.batch_size, block=1000
            )
            if not reply:
                break
            entries = reply[0][1]
            ids = [entry_id for entry_id, _ in entries]
            async with conn.transaction():
                await conn.execute(
                    _CEILING_UPSERT, [i.decode() for i in ids], [f[b"event"] for _, f in entries]
                )
            await bench.redis.xack(stream, group, *ids)
            done += len(entries)
            progress.set(done)
    elapsed = time.perf_counter() - started
    progress.close()
    if done != total:
        raise RuntimeError(f"ceiling read {done} of {total} entries")
    return done / elapsed


# ---- 1b. the schema's own cost ------------------------------------------------------------


async def measure_orders_upsert(bench: Bench, stream: str, total: int) -> float:
    """Events/s of the projector's orders upsert alone: same SQL and rows, rendered beforehand."""
    orders: dict = {}
    participants: dict = {}
    progress = Progress("orders upsert alone", total)
    done, elapsed, cursor = 0, 0.0, "-"
    async with bench.pool.acquire() as conn:
        while done < total:
            chunk = []  # a few batches rendered (untimed), then written (timed)
            for _ in range(20):
                entries = await bench.redis.xrange(stream, cursor, "+", count=bench.batch_size)
                entries = [e for e in entries if e[0] != cursor]
                if not entries:
                    break
                cursor = entries[-1][0]
                events = [(i, decode_event(f[b"event"])) for i, f in entries]
                plan = plan_batch(events, orders, participants)
                orders.update(plan.orders)
                participants.update(plan.participants)
                rows = [writer._order_row(s) for s in plan.orders.values()]
                chunk.append((len(entries), writer._columns(rows, len(writer._ORDER_COLUMNS))))
            if not chunk:
                break
            started = time.perf_counter()
            for count, columns in chunk:
                async with conn.transaction():
                    await conn.execute(writer.statements().upsert_orders, *columns)
                done += count
            elapsed += time.perf_counter() - started
            progress.set(done)
    progress.close()
    return done / elapsed


# ---- 2. the projector ------------------------------------------------------------------------


class ProjectorProcess:
    """A real `orderview projector` child process on one stream and group."""

    def __init__(
        self, bench: Bench, stream: str, group: str, consumer: str, extra: dict | None = None
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
        env |= {
            "ORDERVIEW_DATABASE_URL": bench.database_url,
            "ORDERVIEW_REDIS_URL": bench.redis_url,
            "ORDERVIEW_STREAMS": stream,
            "ORDERVIEW_CONSUMER_GROUP": group,
            "ORDERVIEW_CONSUMER_NAME": consumer,
            "ORDERVIEW_BATCH_SIZE": str(bench.batch_size),
            "ORDERVIEW_METRICS_PORT": "0",
            "ORDERVIEW_LOG_LEVEL": "WARNING",
        } | (extra or {})
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orderview.cli", "projector"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )

    def memory_kb(self) -> tuple[int, int]:
        """(VmHWM, VmRSS) in kB."""
        values = {}
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, value = line.split(":")
                    values[key] = int(value.split()[0])
        return values["VmHWM"], values["VmRSS"]

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"projector exited with {self.proc.returncode}:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    async def stop(self) -> int:
        """SIGTERM, wait for a clean exit; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        for _ in range(600):
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.05)
        else:
            self.proc.kill()
        code = self.proc.wait()
        if code != 0:
            say(f"  projector exited with {code}:\n{self.output()}")
        self.log.close()
        return code


async def group_state(bench: Bench, stream: str, group: str) -> dict | None:
    for g in await bench.redis.xinfo_groups(stream):
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return g
    return None


async def drain(
    bench: Bench, proc: ProjectorProcess, stream: str, group: str, total: int, on_poll=None
) -> float:
    """Seconds from the group's first delivery until nothing is pending or undelivered."""
    progress = Progress("projector", total)
    first = None
    while True:
        proc.check_alive()
        now = time.perf_counter()
        state = await group_state(bench, stream, group)
        if state is not None:
            if first is None and (state["pending"] or (state.get("entries-read") or 0)):
                first = now
            left = (state["lag"] if state["lag"] is not None else total) + state["pending"]
            progress.set(total - left)
            if first is not None and left == 0:
                progress.close()
                return now - first
        if on_poll:
            on_poll()
        await asyncio.sleep(0.01)


async def check_read_model(bench: Bench, stream: str, total: int) -> str:
    """The tables hold a fold of every event (Σ seq = events) and nothing was dead-lettered."""
    applied = await bench.pool.fetchval(
        f"SELECT (SELECT coalesce(sum(seq), 0) FROM {ORDERS})"
        f" + (SELECT coalesce(sum(seq), 0) FROM {PARTICIPANTS})"
    )
    dead = await bench.redis.xlen(f"{stream}:dlq")
    orders = await bench.pool.fetchval(f"SELECT count(*) FROM {ORDERS}")
    applied = int(applied)
    ok = applied == total and dead == 0
    return f"{'ok' if ok else 'MISMATCH'}: {orders:,} orders, Σseq {applied:,}, {dead} dead letters"


async def measure_projector(bench: Bench, stream: str, group: str, total: int) -> float:
    """Events/s of the real projector draining the pre-published backlog."""
    proc = ProjectorProcess(bench, stream, group, "bench-backlog")
    try:
        seconds = await drain(bench, proc, stream, group, total)
    finally:
        code = await proc.stop()
    say(f"    read model {await check_read_model(bench, stream, total)}; exit code {code}")
    return total / seconds


# ---- 3. freshness ----------------------------------------------------------------------------

_VISIBLE = f"""
SELECT 'order', tenant, id, seq FROM {ORDERS}
WHERE (tenant, id) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
UNION ALL
SELECT 'participant', tenant, id, seq FROM {PARTICIPANTS}
WHERE (tenant, id) IN (SELECT * FROM unnest($3::text[], $4::bigint[]))
"""


@dataclass
class Freshness:
    latencies_ms: list[float]
    poll_ms: list[float]
    commit_ms: list[float]
    published: int
    seconds: float


async def probe_commits(bench: Bench, stopping: asyncio.Event, commits: list[float]) -> None:
    """A one-row write transaction every 20 ms: the machine's own commit (WAL flush) latency."""
    async with bench.pool.acquire() as conn:
        while not stopping.is_set():
            started = time.perf_counter()
            async with conn.transaction():
                await conn.execute(_CEILING_UPSERT, ["commit-probe"], [b""])
            commits.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)


async def measure_freshness(
    bench: Bench,
    stream: str,
    group: str,
    workload: Workload,
    rate: int,
    seconds: float,
    poll: float,
) -> Freshness:
    """XADD → visible latency of events published at a steady rate to a running projector."""
    proc = ProjectorProcess(bench, stream, group, "bench-fresh")
    waiting: dict[tuple[str, str, int], list[tuple[int, float]]] = defaultdict(list)
    latencies: list[float] = []
    polls: list[float] = []
    commits: list[float] = []
    total = int(rate * seconds)
    probing = asyncio.Event()
    probe = asyncio.create_task(probe_commits(bench, probing, commits))
    try:
        await wait_for_consumer(bench, proc, stream, group, "bench-fresh")
        publisher = asyncio.create_task(
            steady_publish(bench, stream, workload, rate, total, waiting)
        )
        progress = Progress("freshness", total)
        async with bench.pool.acquire() as conn:
            last_sent = time.time()
            deadline = None
            while not publisher.done() or waiting:
                proc.check_alive()
                sent = time.time()
                await poll_visible(conn, waiting, latencies, sent)
                polls.append((time.time() - last_sent) * 1000)
                last_sent = sent
                progress.set(len(latencies))
                if publisher.done():
                    publisher.result()
                    deadline = deadline or time.monotonic() + 30
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{len(waiting)} aggregates never became visible")
                await asyncio.sleep(poll)
        progress.close()
    finally:
        probing.set()
        await probe
        await proc.stop()
    return Freshness(latencies, polls, commits, total, seconds)


async def wait_for_consumer(
    bench: Bench, proc: ProjectorProcess, stream: str, group: str, consumer: str
) -> None:
    """Until the projector has issued its first XREADGROUP (its consumer appears in the group)."""
    for _ in range(600):
        proc.check_alive()
        names = [c["name"] for c in await bench.redis.xinfo_consumers(stream, group)]
        if consumer.encode() in names or consumer in names:
            await asyncio.sleep(0.5)  # past its first (empty) read, into the blocking one
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("projector did not start reading within 30 s")


async def steady_publish(
    bench: Bench,
    stream: str,
    workload: Workload,
    rate: int,
    total: int,
    waiting: dict[tuple[str, str, int], list[tuple[int, float]]],
) -> None:
    """XADD one event every 1/rate seconds; remember each event's seq and XADD time."""
    start = time.monotonic()
    for i, event in enumerate(workload.events(total)):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        entry_id = await bench.redis.xadd(stream, {"event": event.line})
        xadd_ms = int(entry_id.split(b"-")[0])
        waiting[(event.tenant, event.kind, event.aggregate_id)].append((event.seq, xadd_ms))


async def poll_visible(
    conn: asyncpg.Connection,
    waiting: dict[tuple[str, str, int], list[tuple[int, float]]],
    latencies: list[float],
    sent: float,
) -> None:
    """One poll: events whose row now has their seq are visible; record their latency."""
    if not waiting:
        return
    keys = list(waiting)
    orders = [k for k in keys if k[1] == "order"]
    parts = [k for k in keys if k[1] == "participant"]
    rows = await conn.fetch(
        _VISIBLE,
        [k[0] for k in orders],
        [k[2] for k in orders],
        [k[0] for k in parts],
        [k[2] for k in parts],
    )
    seen_ms = time.time() * 1000
    for kind, tenant, agg, seq in rows:
        key = (tenant, kind, agg)
        events = waiting.get(key, [])
        still = [(s, x) for s, x in events if s > seq]
        latencies.extend(seen_ms - x for s, x in events if s <= seq)
        if still:
            waiting[key] = still
        else:
            waiting.pop(key, None)


# ---- 4. peak RSS -----------------------------------------------------------------------------


async def measure_rss(bench: Bench, stream: str, group: str, total: int, seed: int) -> dict:
    """Peak RSS (VmHWM) of a projector draining a backlog of `total` entries."""
    await reset_read_model(bench)
    await publish(bench, stream, Workload(seed).events(total), total)
    proc = ProjectorProcess(bench, stream, group, "bench-rss")
    samples: list[int] = []

    def sample() -> None:
        try:
            hwm, rss = proc.memory_kb()
            samples.append(rss)
            sample.hwm = hwm  # type: ignore[attr-defined]
        except (FileNotFoundError, KeyError):
            pass

    sample.hwm = 0  # type: ignore[attr-defined]
    try:
        seconds = await drain(bench, proc, stream, group, total, on_poll=sample)
        sample()
    finally:
        await proc.stop()
    say(f"    read model {await check_read_model(bench, stream, total)}")
    await bench.redis.delete(stream)
    return {
        "hwm_mb": sample.hwm / 1024,  # type: ignore[attr-defined]
        "rss_end_mb": samples[-1] / 1024 if samples else 0.0,
        "events_per_s": total / seconds,
    }


# ---- the run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    async with bench_environment(args) as bench:
        bench.batch_size = args.batch_size
        say(f"machine: {await describe_machine(bench.pool, bench.redis)}")
        say(
            f"workload: {args.events:,} events, seed {args.seed}, batch {args.batch_size}, "
            f"projector = `{sys.executable} -m orderview.cli projector` (one replica, subprocess)"
        )
        workload = Workload(args.seed)
        gen = Progress("generating", args.events)
        events = []
        for event in workload.events(args.events):
            events.append(event)
            if len(events) % 10_000 == 0:
                gen.set(len(events))
        gen.set(len(events))
        gen.close()
        stream = bench.stream("orders:events")
        await publish(bench, stream, events, len(events))
        del events

        ceilings, upserts, speeds = [], [], []
        for r in range(1, args.rounds + 1):
            await reset_read_model(bench)
            ceiling = await measure_ceiling(bench, stream, f"ceiling-{r}", args.events)
            await reset_read_model(bench)
            upsert = await measure_orders_upsert(bench, stream, args.events)
            await reset_read_model(bench)
            speed = await measure_projector(bench, stream, f"projector-{r}", args.events)
            ceilings.append(ceiling)
            upserts.append(upsert)
            speeds.append(speed)
            say(
                f"  round {r}: ceiling {ceiling:,.0f} ev/s, orders upsert alone {upsert:,.0f} ev/s, "
                f"projector {speed:,.0f} ev/s, ratio {speed / ceiling:.0%}"
            )

        fresh = None
        if args.freshness_seconds > 0:
            fresh = await measure_freshness(
                bench,
                stream,
                f"projector-{args.rounds}",
                workload,
                args.rate,
                args.freshness_seconds,
                args.poll_ms / 1000,
            )
        rss = None
        if args.rss_events > 0:
            rss = await measure_rss(
                bench, bench.stream("rss:events"), "projector-rss", args.rss_events, args.seed + 1
            )
        report(args, ceilings, upserts, speeds, fresh, rss)


def report(args, ceilings, upserts, speeds, fresh: Freshness | None, rss: dict | None) -> None:
    say("")
    say("results")
    ratios = [s / c for s, c in zip(speeds, ceilings, strict=True)]
    say(f"  ceiling (read + unnest upsert + XACK): {_spread(ceilings, ' ev/s')}")
    say(f"  orders upsert alone (schema's cost):   {_spread(upserts, ' ev/s')}")
    say(f"  projector ({args.events:,} backlog):     {_spread(speeds, ' ev/s')}")
    say(
        f"  ratio projector/ceiling:               "
        f"{', '.join(f'{r:.0%}' for r in ratios)} (target >= 70%)"
    )
    to_upsert = [s / u for s, u in zip(speeds, upserts, strict=True)]
    say(f"  ratio projector/orders upsert alone:   {', '.join(f'{r:.0%}' for r in to_upsert)}")
    if fresh:
        lat = fresh.latencies_ms
        warm = [x for i, x in enumerate(lat) if i >= args.rate]  # the first second is warm-up
        lat = warm or lat
        say(
            f"  freshness at {args.rate}/s for {fresh.seconds:g}s ({len(lat):,} events after "
            f"1 s warm-up): p50 {percentile(lat, 50):.1f} ms, p90 {percentile(lat, 90):.1f} ms, "
            f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms (target p99 <= 50 ms)"
        )
        say(
            f"    poll interval (resolution): median {statistics.median(fresh.poll_ms):.1f} ms, "
            f"p99 {percentile(fresh.poll_ms, 99):.1f} ms; latency = first poll seeing the row "
            f"- XADD entry-id ms"
        )
        commits = fresh.commit_ms
        say(
            f"    commit probe meanwhile (1-row upsert + COMMIT every 20 ms): p50 "
            f"{percentile(commits, 50):.1f} ms, p99 {percentile(commits, 99):.1f} ms, "
            f"max {max(commits):.1f} ms (the WAL flush every batch also waits for)"
        )
    if rss:
        say(
            f"  peak RSS draining {args.rss_events:,} entries: VmHWM {rss['hwm_mb']:.0f} MB "
            f"(RSS at end {rss['rss_end_mb']:.0f} MB, {rss['events_per_s']:,.0f} ev/s) "
            f"(target <= 200 MB)"
        )


def _spread(values: list[float], unit: str) -> str:
    text = ", ".join(f"{v:,.0f}" for v in values)
    if len(values) > 1:
        mean = statistics.mean(values)
        text += f" (mean {mean:,.0f}{unit}, spread ±{(max(values) - min(values)) / 2 / mean:.0%})"
    else:
        text += unit
    return text


def main(argv: list[str] | None = None) -> None:
    p = options("benchmarks.projector", __doc__)
    p.add_argument("--events", type=int, default=200_000, help="backlog size (default 200000)")
    p.add_argument("--rounds", type=int, default=1, help="ceiling/projector pairs (default 1)")
    p.add_argument("--batch-size", type=int, default=1000, help="COUNT and batch (default 1000)")
    p.add_argument("--rate", type=int, default=1000, help="freshness publish rate, events/s")
    p.add_argument("--freshness-seconds", type=float, default=20, help="0 skips freshness")
    p.add_argument("--poll-ms", type=float, default=2, help="sleep between visibility polls")
    p.add_argument("--rss-events", type=int, default=1_000_000, help="0 skips the RSS run")
    run_main(run, p, argv)


if __name__ == "__main__":
    main()
