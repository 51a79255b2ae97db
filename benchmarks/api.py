"""Read API benchmark: the API beside the peer a user would pick, a bare app and PostgreSQL alone.

    .venv/bin/python benchmarks/api.py [--orders 1000000] [--seconds 10] [--rounds 3]
        [--targets api,bare,floor,peer,pgbench,ceiling] [--scenarios get,getpos,list,deep] [--keep]
        [--baseline DIR]

Uses PostgreSQL at ORDERVIEW_BENCH_ADMIN_URL (default postgresql://postgres@127.0.0.1:5432/postgres):
creates its own database, loads 1 000 000 orders over 10 tenants with COPY (documents from the
projector's render functions), runs wrk (installed with apt-get when missing) with 64 connections,
prints the machine, the numbers and the issue's targets (met / NOT met), drops the database.
`--keep` loads into a fixed database instead, reuses it on the next run when its load completed,
and leaves it in place.

Targets, all on the same data, started together:
- api: `orderview api` as it starts; with `--baseline DIR`, also `baseline`: `orderview api` of
  another checkout (a worktree of main, say) run with this virtualenv, for a before/after in one run;
- bare: a bare Litestar + asyncpg app, the same SQL and bytes (benchmarks/api_bare.py, granian CLI);
- peer: Platformatic DB 3.67 on Node 22 (auto-REST, benchmarks/api_peers.py; installed from npm
  into a cache folder outside the repository on first run);
- pgbench: PostgreSQL alone, the API's own statements, `-M prepared`;
- floor: the bare app's answers kept in a dict after their first read (benchmarks/api_floor.py):
  the most a caching Litestar app can serve on this machine, the bound of the API's targets;
- ceiling: a bare ASGI app under uvicorn (benchmarks/api_ceiling.py).
Scenarios: `get` (2 000 random ids of one tenant), `getpos` (the same gets naming a settled
`X-Min-Position`, API targets only; Redis at ORDERVIEW_BENCH_REDIS_URL, default
redis://127.0.0.1:6379/0, see benchmarks/api_position.py), `list` (6 filtered lists: limit 25, one
status, sort total or created_at, descending, first page), `deep` (a keyset page far down the first
list; not for the peer). All targets are warmed up (2 s per scenario: the ids are all read before
anything is measured), then each round runs every scenario on every target in turn, so noise from
the shared machine lands on all of them alike. The report gives the median and spread of the
rounds; ratios are taken within each round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import asyncpg
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.api_peers import (  # noqa: E402
    create_peer_table,
    peer_list_path,
    pgbench_scripts,
    store_ids,
)
from benchmarks.api_position import (  # noqa: E402
    HEADER,
    drop_stream,
    settled_position,
    stream_key,
    target_env,
)
from benchmarks.api_report import print_table, print_targets  # noqa: E402
from benchmarks.api_targets import (  # noqa: E402
    CONNECTIONS,
    PgBench,
    Server,
    ensure_wrk,
    lua_of,
)
from projections.documents import render_order  # noqa: E402
from projections.events import Item  # noqa: E402
from projections.fold import OrderState  # noqa: E402
from projections.migrate import migrate  # noqa: E402
from projections.tables import ORDERS  # noqa: E402
from services.api.keys import create_key, set_feature  # noqa: E402
from services.api.queries import list_sql, next_cursor, service_orders_list  # noqa: E402

BIN = Path(sys.executable).parent
TENANTS = 10
TENANT = "t3"
STATUSES = ("draft", "pending", "confirmed", "in_progress", "completed", "cancelled")
SECRET = "bench-cursor-secret-" + secrets.token_hex(8)
# The 6 filtered lists (limit 25, a filter, a sort; descending, the API's default); deep: the first.
LISTS = [
    {"status": status, "sort": sort, "limit": "25"}
    for status, sort in zip(
        ("confirmed", "pending", "completed", "cancelled", "in_progress", "draft"),
        ("total", "created_at") * 3, strict=True,
    )
]  # fmt: skip
LIST = LISTS[0]
IDS = 2000
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


def versions(url: str) -> str:
    """PostgreSQL (the server's) and Redis versions."""

    async def server() -> str:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()

    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    found = re.search(r"v=(\S+)", redis)
    return f"PostgreSQL {asyncio.run(server())}; Redis {found[1] if found else 'not installed'}"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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
    """A key, the deep-page cursor, ids of the benchmark tenant (also in bench.ids), the peer's table."""
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
            f"SELECT id FROM {ORDERS} WHERE tenant = $1 ORDER BY random() LIMIT {IDS}", TENANT)]  # fmt: skip
        await store_ids(conn, ids)
        await create_peer_table(conn)
        return key, cursor, ids
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10, help="length of one wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each scenario per target")
    parser.add_argument(
        "--targets", "--servers", default="api,bare,floor,peer,pgbench,ceiling",
        help="of api, bare, floor, peer, pgbench, ceiling",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", type=Path, metavar="DIR",
        help="also measure `orderview api` of the checkout DIR (e.g. a worktree of main)",
    )  # fmt: skip
    parser.add_argument("--scenarios", default="get,getpos,list,deep")
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
    print(f"{versions(admin)}; load average at start {load_average()}", flush=True)
    name = f"{KEPT}_{args.orders}" if args.keep else f"orderview_bench_{secrets.token_hex(4)}"
    url = urlunsplit(urlsplit(admin)._replace(path=f"/{name}"))
    loaded = f"orderview benchmark: {args.orders} orders loaded"
    reuse = args.keep and asyncio.run(_comment(admin, name)) == loaded
    stream, position = stream_key(), None
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
        if "getpos" in args.scenarios.split(","):
            position = asyncio.run(settled_position(url, stream))
            print(f"getpos: {HEADER}: {position} (settled)")
        return measure(args, url, key, cursor, ids, wrk_bin, position)
    finally:
        if position is not None:
            asyncio.run(drop_stream(stream))
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


def _paths(kind: str, ids: list[int], cursor: str) -> dict[str, list[str]]:
    """The requests of each scenario on one target (wrk picks one at random per request)."""
    if kind == "peer":
        return {
            "get": [f"/orders/{i}?fields=doc" for i in ids],
            "list": [peer_list_path(TENANT, params) for params in LISTS],
        }
    if kind in ("bare", "floor", "ceiling"):
        return {
            "get": [f"/one/{i}" for i in ids],
            "list": [f"/list/{n}" for n in range(len(LISTS))],
            "deep": ["/deep"],
        }
    lists = ["/api/v1/service-orders?" + urlencode(params) for params in LISTS]
    gets = [f"/api/v1/service-orders/{i}" for i in ids]
    return {
        "get": gets,
        "getpos": gets,  # with the header (`_headers`)
        "list": lists,
        "deep": [f"{lists[0]}&{urlencode({'cursor': cursor})}"],
    }


def _headers(scenario: str, position: str | None) -> dict[str, str]:
    """The headers a scenario's requests carry besides the key."""
    return {HEADER: position} if scenario == "getpos" and position else {}


def _pgbench(url: str, folder: Path, ids: list[int], cursor: str) -> PgBench:
    """PostgreSQL alone: the API's statements for the same ids and lists."""
    secret = SECRET.encode()
    named = {f"list{n}": params for n, params in enumerate(LISTS)}
    named["deep"] = LIST | {"cursor": cursor}
    pages = {
        name: list_sql(service_orders_list(TENANT, {k: [v] for k, v in params.items()}, secret))
        for name, params in named.items()
    }
    scripts, variables = pgbench_scripts(folder, TENANT, len(ids), pages)
    return PgBench(url, scripts, variables, folder)


def _documents(target: Server, path: str, key: str, headers: dict | None = None) -> list:
    """The order documents one request answers (a page's or one), as JSON values."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{target.port}{path}",
        headers={"Authorization": f"Bearer {key}"} | (headers or {}),
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.loads(response.read())
    if isinstance(body, list):  # Platformatic: rows of the selected fields
        return [row["doc"] for row in body]
    if isinstance(body, dict) and "doc" in body:
        return [body["doc"]]
    return body["data"] if isinstance(body["data"], list) else [body["data"]]


def check_same(targets: dict, ids: list[int], cursor: str, key: str) -> None:
    """Every HTTP target answers the same documents to the same scenario request, or stop."""
    servers = {k: t for k, t in targets.items() if isinstance(t, Server)}
    for scenario in ("get", "list", "deep"):
        count = {"get": 3, "list": len(LISTS), "deep": 1}[scenario]
        for n in range(count):
            answers = {
                kind: _documents(server, _paths(kind, ids, cursor)[scenario][n], key)
                for kind, server in servers.items()
                if scenario in server.scripts
            }
            first = next(iter(answers.values()))
            differ = [kind for kind, docs in answers.items() if docs != first]
            if differ or not first:
                ids_of = {k: [d.get("id") for d in docs] for k, docs in answers.items()}
                raise SystemExit(f"{scenario} #{n}: {', '.join(differ)} differ; ids: {ids_of}")
    print(f"checked: {', '.join(servers)} answer the same documents to each scenario")


def check_position(targets: dict, ids: list[int], cursor: str, key: str, position: str) -> None:
    """A get naming the settled position answers what the same get answers without it, or stop."""
    for kind, server in targets.items():
        if "getpos" not in server.scripts:
            continue
        for path in _paths(kind, ids, cursor)["getpos"][:3]:
            plain = _documents(server, path, key)
            if _documents(server, path, key, _headers("getpos", position)) != plain:
                raise SystemExit(f"getpos: {kind} answers {path} differently with {HEADER}")
    print(f"checked: a get naming {position} answers the same document")


def measure(
    args, url: str, key: str, cursor: str, ids: list[int], wrk_bin: str, position: str | None
) -> int:
    """Every target started at once; each round runs every scenario on every target in turn."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    env |= {
        "ORDERVIEW_DATABASE_URL": url, "ORDERVIEW_CURSOR_SECRET": SECRET,
        "ORDERVIEW_LOG_LEVEL": "WARNING", "BENCH_TENANT": TENANT, "BENCH_LISTS": json.dumps(LISTS),
        # Pools whole from the start (the API's documented setting; the bare apps do the same):
        # PostgreSQL's connections are shared with the machine's test runs, so a full server
        # refuses the benchmark as it starts rather than in the middle of a measured run.
        "ORDERVIEW_POOL_MIN_SIZE": "10",
        "BENCH_DEEP": json.dumps(LIST | {"cursor": cursor}), "PYTHONPATH": str(ROOT),
        "DATABASE_URL": url,
    }  # fmt: skip
    if position is not None:
        env |= target_env(position)
    folder = Path(tempfile.mkdtemp(prefix="orderview-bench-"))
    scenarios = args.scenarios.split(",")
    kinds = args.targets.split(",") + (["baseline"] if args.baseline else [])
    baseline = args.baseline.resolve() if args.baseline else None
    targets: dict[str, Server | PgBench] = {}
    runs: dict[str, dict[str, list[dict]]] = {k: {s: [] for s in scenarios} for k in kinds}
    exits: dict[str, int] = {}
    try:
        for kind in kinds:
            if kind != "pgbench":
                server = targets[kind] = Server(kind, env, wrk_bin, key, baseline)
                for scenario, paths in _paths(kind, ids, cursor).items():
                    if scenario == "getpos" and position is None:
                        continue
                    headers = _headers(scenario, position)
                    server.scripts[scenario] = lua_of(folder, f"{kind}_{scenario}", paths, headers)
        for target in targets.values():
            for scenario in target.scripts:
                if scenario in scenarios:
                    target.measure(scenario, 2)  # warm-up: every pool at its size, every id read
        check_same(targets, ids, cursor, key)
        if position is not None:
            check_position(targets, ids, cursor, key, position)
        if "pgbench" in kinds:
            targets["pgbench"] = _pgbench(url, folder, ids, cursor)
        print(f"warmed up; load average {load_average()}", flush=True)
        for round_ in range(args.rounds):
            for scenario in scenarios:
                # Rotate who goes first so that no target always follows the same neighbour.
                order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
                for kind in order:
                    if scenario not in targets[kind].scripts:
                        continue
                    result = targets[kind].measure(scenario, args.seconds)
                    if result is None:
                        print(f"round {round_ + 1} {scenario:<5} {kind:<8} skipped: PostgreSQL "
                              "has no connection free", flush=True)  # fmt: skip
                        runs[kind][scenario].append(None)  # keeps the rounds aligned
                        continue
                    runs[kind][scenario].append(result)
                    clients = f" ({result['clients']} clients)" if "clients" in result else ""
                    print(f"round {round_ + 1} {scenario:<5} {kind:<8} {result['rps']:>7.0f} req/s"
                          f" p50 {result['p50']:.2f} ms p99 {result['p99']:.2f} ms{clients}",
                          flush=True)  # fmt: skip
            print(f"load average after round {round_ + 1}: {load_average()}", flush=True)
    finally:
        for kind, target in targets.items():
            exits[kind] = target.stop()
    peaks = {k: t.peak for k, t in targets.items()}
    print(f"\n{args.rounds} rounds × {args.seconds} s per scenario and target, wrk -t2 "
          f"-c{CONNECTIONS}; median (min–max)")  # fmt: skip
    print_table(runs, peaks, exits)
    for api in ("api", "baseline"):
        if api in kinds:
            print_targets(runs, peaks, api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
