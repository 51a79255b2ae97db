"""Read API benchmark: 1 000 000 orders over 10 tenants, wrk against the API and a bare ceiling.

    .venv/bin/python benchmarks/api.py [--orders 1000000] [--seconds 10] [--rounds 3]
        [--baseline DIR] [--scenarios list,deep,get] [--keep]

Uses PostgreSQL at ORDERVIEW_BENCH_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/postgres):
creates its own database, loads it with COPY (documents from the projector's render functions),
runs wrk (installed with apt-get when missing), prints the machine and the numbers, drops it.
`--keep` loads into a fixed database instead, reuses it on the next run when its load completed,
and leaves it in place.

Targets: `ceiling` (a bare ASGI app on uvicorn, benchmarks/api_ceiling.py), `api` (`orderview api`
of this checkout) and, with `--baseline DIR`, `baseline`: `orderview api` of another checkout (a
worktree of main, say) run with this virtualenv, to measure a change before and after in one run.
The ceiling and every server run side by side: all are started, warmed up (2 s per scenario), then
each round runs every scenario on every target in turn, so noise from the shared machine lands on
all of them alike. The report gives the median and spread of the rounds; a share of the ceiling is
taken within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from projections.documents import render_order  # noqa: E402
from projections.events import Item  # noqa: E402
from projections.fold import OrderState  # noqa: E402
from projections.migrate import migrate  # noqa: E402
from projections.tables import ORDERS  # noqa: E402
from services.api.keys import create_key, set_feature  # noqa: E402
from services.api.queries import next_cursor, service_orders_list  # noqa: E402

BIN = Path(sys.executable).parent
TENANTS = 10
TENANT = "t3"
STATUSES = ("draft", "pending", "confirmed", "in_progress", "completed", "cancelled")
SECRET = "bench-cursor-secret-" + secrets.token_hex(8)
LIST = {"status": "confirmed", "sort": "total", "limit": "25"}
COLUMNS = [
    "tenant", "id", "seq", "type", "status", "payment_status", "currency", "order_number",
    "event_key", "participant_id", "location_id", "scheduled_at", "duration", "subtotal",
    "tax_total", "total", "submitted_at", "confirmed_at", "cancelled_at", "created_at",
    "updated_at", "state", "doc_v1", "items_v1", "doc_v2",
]  # fmt: skip
_state = msgspec.msgpack.Encoder()
BASE = datetime(2024, 1, 1, tzinfo=UTC)
KEPT = "orderview_bench_kept"


# ---- machine -----------------------------------------------------------------------------------


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), platform.processor(),
    )  # fmt: skip
    mem = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1]) // 1024
    return (
        f"CPU: {cpu}; cores: {os.cpu_count()}; RAM: {mem} MiB; "
        f"Python {platform.python_version()} on {platform.platform()}"
    )


def ensure_wrk() -> str:
    if shutil.which("wrk") is None:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


# ---- data ----------------------------------------------------------------------------------------


def order_row(order_id: int) -> tuple:
    rnd = random.Random(order_id)
    created = BASE + timedelta(seconds=order_id * 7 + rnd.randrange(1000))
    status = rnd.choice(STATUSES)
    items = tuple(
        Item(i, rnd.choice(["Consultation", "Room hire", "Ticket", "Café ☕"]), rnd.randint(1, 4),
             Decimal(rnd.randrange(100, 50000)) / 100, Decimal("0.0875"), f"svc_{rnd.randrange(99)}")
        for i in range(1, rnd.randint(1, 3) + 1)
    )  # fmt: skip
    submitted = None if status == "draft" else created + timedelta(minutes=5)
    state = OrderState(
        tenant=f"t{order_id % TENANTS}", id=order_id, seq=3, type=rnd.choice(["booking", "sale"]),
        status=status, payment_status="pending", currency="EUR",
        order_number=None if order_id % 9 == 0 else f"SO-{order_id:07d}",
        event_key=f"event-{order_id % 40}", participant_id=order_id % 5000 or None,
        location_id=f"loc_{order_id % 30}", scheduled_at=created + timedelta(days=3),
        duration=60, notes="First-time customer" if order_id % 3 == 0 else None, items=items,
        submitted_at=submitted, confirmed_at=None, cancelled_at=None, cancellation_reason=None,
        created_at=created, updated_at=created + timedelta(hours=1),
    )  # fmt: skip
    docs = render_order(state)
    return (
        state.tenant, state.id, state.seq, state.type, state.status, state.payment_status,
        state.currency, state.order_number, state.event_key, state.participant_id,
        state.location_id, state.scheduled_at, state.duration, docs.subtotal, docs.tax_total,
        docs.total, state.submitted_at, None, None, state.created_at, state.updated_at,
        _state.encode(state), docs.doc_v1, docs.items_v1, docs.doc_v2,
    )  # fmt: skip


def rows_of(bounds: tuple[int, int]) -> list[tuple]:
    return [order_row(i) for i in range(*bounds)]


async def load(url: str, count: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname || '.' || tablename = $1"
            " AND indexname NOT LIKE '%pkey'",
            ORDERS,
        )
        for idx in indexes:
            await conn.execute(f"DROP INDEX read_model.{idx['indexname']}")
        chunk = 20_000
        started = time.monotonic()
        with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as workers:
            bounds = [(i, min(i + chunk, count + 1)) for i in range(1, count + 1, chunk)]
            for rows in workers.imap(rows_of, bounds):
                await conn.copy_records_to_table(
                    "orders", schema_name="read_model", records=rows, columns=COLUMNS
                )
        for idx in indexes:
            await conn.execute(idx["indexdef"])
        await conn.execute(f"VACUUM ANALYZE {ORDERS}")
        size = await conn.fetchval(f"SELECT pg_size_pretty(pg_total_relation_size('{ORDERS}'))")
        avg = await conn.fetchval(f"SELECT avg(length(doc_v1))::int FROM {ORDERS} WHERE id < 5000")
        print(f"loaded {count} orders in {time.monotonic() - started:.0f} s ({size}, "
              f"~{avg} bytes per order document)")  # fmt: skip
    finally:
        await conn.close()


async def prepare(url: str) -> tuple[str, str, list[int]]:
    """A key, the deep-page cursor, and ids of the benchmark tenant."""
    conn = await asyncpg.connect(url)
    try:
        _, key = await create_key(conn, TENANT, ["service_orders", "orders:read"])
        await set_feature(conn, TENANT, "service_orders", True)
        matching = await conn.fetchval(
            f"SELECT count(*) FROM {ORDERS} WHERE tenant = $1 AND status = $2",
            TENANT,
            LIST["status"],
        )
        offset = min(10_000 * 25, matching - 26)
        row = await conn.fetchrow(
            f"SELECT total, id FROM {ORDERS} WHERE tenant = $1 AND status = $2"
            " ORDER BY total DESC, id DESC OFFSET $3 LIMIT 1",
            TENANT, LIST["status"], offset,
        )  # fmt: skip
        query = service_orders_list(TENANT, {k: [v] for k, v in LIST.items()}, SECRET.encode())
        cursor = next_cursor(query, row["total"], row["id"], SECRET.encode())
        print(f"deep page: cursor after row {offset} of {matching} matching orders")
        ids = [r[0] for r in await conn.fetch(
            f"SELECT id FROM {ORDERS} WHERE tenant = $1 ORDER BY random() LIMIT 1000", TENANT)]  # fmt: skip
        return key, cursor, ids
    finally:
        await conn.close()


# ---- servers and wrk -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, port: int, env: dict[str, str], baseline: Path | None) -> subprocess.Popen:
    cli = "import sys; from orderview.cli import main; sys.exit(main())"
    commands = {
        "api": [str(BIN / "orderview"), "api", "--port", str(port)],
        # The other checkout's code first on the path (before this checkout's editable install).
        "baseline": [sys.executable, "-c", cli, "api", "--port", str(port)],
        "ceiling": [str(BIN / "uvicorn"), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                    "--log-level", "warning", "--port", str(port), "benchmarks.api_ceiling:app"],
    }  # fmt: skip
    cwd = ROOT
    if kind == "baseline":
        assert baseline is not None
        cwd, env = baseline, env | {"PYTHONPATH": str(baseline)}
    proc = subprocess.Popen(commands[kind], env=env, cwd=cwd, stdout=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{kind} did not start")


def rss_mib(pid: int) -> float:
    """RSS of a process and its children (with --workers N, the workers)."""
    total = 0
    pids = [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]  # fmt: skip
    for p in pids:
        with contextlib.suppress(OSError, TypeError):
            total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{p}/status").read_text())[1])
    return total / 1024


def wrk(binary: str, url: str, seconds: int, key: str, lua: str | None) -> dict[str, float]:
    args = [
        binary,
        "-t1",
        "-c16",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {key}",
    ]
    if lua:
        args += ["-s", lua]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def ms(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]

    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "errors": int(errors[1]) if errors else 0}


def warm_up(server: Server, scenarios: dict, key: str, wrk_bin: str) -> None:
    """Pool, prepared statements, key cache and the CPU caches, before anything is measured."""
    for path, lua in scenarios.values():
        wrk(wrk_bin, f"http://127.0.0.1:{server.port}{path}", 2, key, lua)


class Server:
    """One target under test: its process, its port and its peak RSS while measured."""

    def __init__(self, kind: str, env: dict[str, str], baseline: Path | None = None) -> None:
        self.kind, self.port = kind, free_port()
        self.proc = start(kind, self.port, env, baseline)
        self.peak = 0.0

    def measure(self, wrk_bin: str, path: str, lua: str | None, seconds: int, key: str) -> dict:
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                self.peak = max(self.peak, rss_mib(self.proc.pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            return wrk(wrk_bin, f"http://127.0.0.1:{self.port}{path}", seconds, key, lua)
        finally:
            stop.set()
            sampler.join()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each scenario per target")
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help="also measure `orderview api` of the checkout DIR (e.g. a worktree of main)",
    )  # fmt: skip
    parser.add_argument("--scenarios", default="list,deep,get")
    parser.add_argument(
        "--keep", "--reuse", action="store_true",
        help=f"load once into {KEPT}_<orders>, reuse it when already loaded, do not drop it",
    )  # fmt: skip
    args = parser.parse_args()
    print(machine())
    wrk_bin = ensure_wrk()
    admin = os.environ.get(
        "ORDERVIEW_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"{KEPT}_{args.orders}" if args.keep else f"orderview_bench_{secrets.token_hex(4)}"
    url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    loaded = f"orderview benchmark: {args.orders} orders loaded"
    print(
        f"PostgreSQL: {subprocess.run(['psql', '--version'], capture_output=True, text=True).stdout.strip()}"
    )
    reuse = args.keep and asyncio.run(_comment(admin, name)) == loaded
    if not reuse:
        asyncio.run(_admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_admin_sql(admin, f'CREATE DATABASE "{name}"'))
    try:
        if reuse:
            print(f"reusing database {name} ({args.orders} orders)")
        else:
            asyncio.run(load(url, args.orders))
            asyncio.run(_admin_sql(admin, f"COMMENT ON DATABASE \"{name}\" IS '{loaded}'"))
        key, cursor, ids = asyncio.run(prepare(url))
        return measure(args, url, key, cursor, ids, wrk_bin)
    finally:
        if args.keep:
            print(f"kept database {name} (drop it: DROP DATABASE {name})")
        else:
            asyncio.run(_admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            print(f"dropped database {name}")


async def _admin_sql(admin: str, sql: str) -> None:
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _comment(admin: str, name: str) -> str | None:
    """The comment of database `name` (the marker of a completed load), None if it does not exist."""
    conn = await asyncpg.connect(admin)
    try:
        return await conn.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1", name
        )
    finally:
        await conn.close()


def measure(args, url: str, key: str, cursor: str, ids: list[int], wrk_bin: str) -> int:
    """Every target started at once; each round runs every scenario on every target in turn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    env |= {
        "ORDERVIEW_DATABASE_URL": url, "ORDERVIEW_CURSOR_SECRET": SECRET,
        "ORDERVIEW_LOG_LEVEL": "WARNING", "BENCH_TENANT": TENANT, "BENCH_LIST": json.dumps(LIST),
        "BENCH_DEEP": json.dumps(LIST | {"cursor": cursor}), "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="orderview-bench-"))
    list_qs = "&".join(f"{k}={v}" for k, v in LIST.items())

    def by_id(prefix: str) -> str:
        lua = folder / f"{prefix.strip('/').replace('/', '_')}.lua"
        lua.write_text(
            "local ids = {" + ",".join(map(str, ids)) + "}\n"
            f'request = function() return wrk.format(nil, "{prefix}" .. ids[math.random(#ids)]) end\n'
        )
        return str(lua)

    api = {
        "list": (f"/api/v1/service-orders?{list_qs}", None),
        "deep": (f"/api/v1/service-orders?{list_qs}&cursor={cursor}", None),
        "get": ("/api/v1/service-orders/1", by_id("/api/v1/service-orders/")),
    }
    ceiling = {"list": ("/list", None), "deep": ("/deep", None), "get": ("/one/1", by_id("/one/"))}
    scenarios = args.scenarios.split(",")
    kinds = ["ceiling", "api"] + (["baseline"] if args.baseline else [])
    paths = {kind: ceiling if kind == "ceiling" else api for kind in kinds}
    runs: dict[str, dict[str, list[dict]]] = {k: {s: [] for s in scenarios} for k in kinds}
    servers: dict[str, Server] = {}
    exits: dict[str, int] = {}
    try:
        for kind in kinds:
            servers[kind] = Server(kind, env, args.baseline and args.baseline.resolve())
        for kind, server in servers.items():
            warm_up(server, paths[kind], key, wrk_bin)
        for round_ in range(args.rounds):
            for scenario in scenarios:
                # Rotate who goes first so that no target always follows the same neighbour.
                order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
                for kind in order:
                    path, lua = paths[kind][scenario]
                    result = servers[kind].measure(wrk_bin, path, lua, args.seconds, key)
                    runs[kind][scenario].append(result)
                    print(f"round {round_ + 1} {scenario:<5} {kind:<8} {result['rps']:>7.0f} req/s"
                          f" p50 {result['p50']:.2f} ms p99 {result['p99']:.2f} ms", flush=True)  # fmt: skip
    finally:
        for kind, server in servers.items():
            exits[kind] = server.stop()
    print_report(runs, {k: s.peak for k, s in servers.items()}, exits, args)
    return 0


def _spread(values: list[float], fmt: str) -> str:
    """`median (min–max)` of the runs."""
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def print_report(runs: dict, peaks: dict, exits: dict, args) -> None:
    """Median and spread over the rounds; shares of the ceiling are taken round by round."""
    ceiling = runs["ceiling"]
    print(f"\n{args.rounds} rounds × {args.seconds} s per scenario and target, wrk -t1 -c16; "
          "median (min–max)")  # fmt: skip
    print(f"{'target':<9}{'scenario':<9}{'req/s':<20}{'p50 ms':<20}{'p99 ms':<20}"
          f"{'% of ceiling':<16}{'non-2xx':>7}")  # fmt: skip
    for kind, scenarios in runs.items():
        for scenario, results in scenarios.items():
            shares = [
                r["rps"] / c["rps"] * 100 for r, c in zip(results, ceiling[scenario], strict=True)
            ]
            errors = sum(r["errors"] for r in results)
            print(f"{kind:<9}{scenario:<9}{_spread([r['rps'] for r in results], '.0f'):<20}"
                  f"{_spread([r['p50'] for r in results], '.2f'):<20}"
                  f"{_spread([r['p99'] for r in results], '.1f'):<20}"
                  f"{_spread(shares, '.0f'):<16}{errors:>7}")  # fmt: skip
        line = f"{kind:<9}peak RSS {peaks[kind]:.0f} MiB; exit code after SIGTERM {exits[kind]}"
        if "deep" in scenarios and "list" in scenarios:
            ratios = [
                d["p50"] / f["p50"]
                for d, f in zip(scenarios["deep"], scenarios["list"], strict=True)
            ]
            line += f"; deep/first p50 {_spread(ratios, '.2f')}"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
