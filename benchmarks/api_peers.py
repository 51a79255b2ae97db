"""What `benchmarks/api.py` measures the API against, besides its own bare apps.

The peer: Platformatic DB (auto-REST over PostgreSQL) on Node 22, both from the npm registry into
a cache folder outside the repository (`$XDG_CACHE_HOME/orderview-bench/`, installed on first use
from a pinned package.json written there), serving `public.orders`: the same orders, the same JSON
document per order (`doc`, type json, so the bytes stored are the API's), the filter and sort
columns and the API's own indexes on them.

PostgreSQL alone: pgbench (`-M prepared`) running the API's own statements: the point read of one
of the same ids and the same keyset pages, their arguments as pgbench variables (bind parameters).
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

import asyncpg

from projections.tables import ORDERS

PLATFORMATIC = "3.67.0"
NODE = "22.23.3"  # Platformatic DB 3.67 needs Node >= 22.19
PEER_TABLE = "public.orders"

# Started by the documented programmatic API (`create`, then `start`): one process, one thread
# for HTTP, as `orderview api` is one process; logging at warn, GraphQL off, REST on.
_START = """import { create } from '@platformatic/db'
const app = await create(process.cwd(), {
  server: { hostname: '127.0.0.1', port: Number(process.env.PORT), logger: { level: 'warn' } },
  db: { connectionString: process.env.DATABASE_URL, poolSize: 10, graphql: false, openapi: true }
})
await app.start({ listen: true })
"""


def cache_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "orderview-bench" / f"platformatic-{PLATFORMATIC}-node-{NODE}"


def ensure_platformatic() -> Path:
    """The folder holding Node and Platformatic DB, installed (once, with npm) when missing."""
    folder = cache_folder()
    arch = {"x86_64": "x64", "aarch64": "arm64"}[platform.machine()]
    node_package = f"node-linux-{arch}"  # the Node binary itself, as an npm package
    manifest = {
        "name": "orderview-bench-peer", "private": True, "type": "module",
        "dependencies": {node_package: NODE, "@platformatic/db": PLATFORMATIC},
    }  # fmt: skip
    done = folder / ".installed"
    if done.exists() and json.loads(done.read_text()) == manifest:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "package.json").write_text(json.dumps(manifest, indent=2))
    (folder / "start.mjs").write_text(_START)
    print(f"installing Platformatic DB {PLATFORMATIC} and Node {NODE} from npm into {folder} "
          "(first run only, a few minutes)…", flush=True)  # fmt: skip
    # --ignore-scripts: nothing here needs one (better-sqlite3's build is for SQLite only).
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=folder, check=True,
    )  # fmt: skip
    done.write_text(json.dumps(manifest))
    return folder


def platformatic_command(folder: Path) -> list[str]:
    return [str(folder / "node_modules" / ".bin" / "node"), str(folder / "start.mjs")]


async def create_peer_table(conn: asyncpg.Connection) -> None:
    """`public.orders` from the read model, once per database (a kept one keeps it)."""
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", PEER_TABLE):
        return
    print(f"copying the orders into {PEER_TABLE} for Platformatic DB…", flush=True)
    await conn.execute(f"""
        CREATE TABLE {PEER_TABLE} (
            id bigint PRIMARY KEY, tenant text NOT NULL, status text COLLATE "C" NOT NULL,
            total numeric NOT NULL, created_at timestamptz NOT NULL, doc json NOT NULL);
        INSERT INTO {PEER_TABLE}
            SELECT id, tenant, status, total, created_at, convert_from(doc_v1, 'UTF8')::json
            FROM {ORDERS};
        CREATE INDEX orders_total_idx ON {PEER_TABLE} (tenant, total, id);
        CREATE INDEX orders_status_created_idx ON {PEER_TABLE} (tenant, status, created_at, id);
    """)  # fmt: skip (one implicit transaction: a table is there whole or not at all)
    await conn.execute(f"VACUUM ANALYZE {PEER_TABLE}")


def peer_list_path(tenant: str, params: dict[str, str]) -> str:
    """The Platformatic request for one API list: same filter, same sort (id breaks ties).

    Field names in its query string are camelCase (`orderby.createdAt`); another spelling is
    dropped without an error, so `check_same` in api.py compares the pages.
    """
    head, *rest = params["sort"].split("_")
    sort = head + "".join(part.title() for part in rest)
    return (
        f"/orders?where.tenant.eq={tenant}&where.status.eq={params['status']}"
        f"&orderby.{sort}=desc&orderby.id=desc&limit={params['limit']}&fields=doc"
    )


# ---- pgbench ---------------------------------------------------------------------------------


class TooManyClients(Exception):
    """PostgreSQL refused a pgbench connection: its connection limit is reached."""


async def store_ids(conn: asyncpg.Connection, ids: list[int]) -> None:
    """`bench.ids` (k 1…n → id): lets a pgbench script pick one of the very ids wrk picks."""
    await conn.execute(
        "CREATE SCHEMA IF NOT EXISTS bench; DROP TABLE IF EXISTS bench.ids;"
        " CREATE TABLE bench.ids (k int PRIMARY KEY, id bigint NOT NULL)"
    )
    await conn.copy_records_to_table(
        "ids", schema_name="bench", records=list(enumerate(ids, 1)), columns=["k", "id"]
    )
    await conn.execute("ANALYZE bench.ids")


def pgbench_scripts(folder: Path, tenant: str, count: int, pages: dict[str, tuple[str, list]]):
    """Script files and -D variables per scenario: `get`, `list` (one file per list), `deep`."""
    variables = [f"tenant={tenant}"]
    get = folder / "pg_get.sql"
    get.write_text(
        f"\\set k random(1, {count})\n"
        f"SELECT doc_v1 FROM {ORDERS} WHERE tenant = :tenant"
        " AND id = (SELECT id FROM bench.ids WHERE k = :k);\n"
    )
    scripts: dict[str, list[str]] = {"get": [str(get)], "list": [], "deep": []}
    for name, (sql, args) in pages.items():
        for n, value in enumerate(args, 1):
            variables.append(f"{name}_{n}={value}")
        text = re.sub(r"\$(\d+)", lambda m, name=name: f":{name}_{m[1]}", sql)
        path = folder / f"pg_{name}.sql"
        path.write_text(text + ";\n")
        scripts["deep" if name == "deep" else "list"].append(str(path))
    return scripts, variables


def pgbench(
    url: str, scripts: list[str], variables: list[str], clients: int, seconds: int, folder: Path
) -> dict[str, Any]:
    """One pgbench run: req/s (transactions/s) and latency percentiles from its per-transaction log."""
    for old in folder.glob("pglog*"):
        old.unlink()
    args = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", "2", "-T", str(seconds),
            "-l", f"--log-prefix={folder / 'pglog'}"]  # fmt: skip
    for script in scripts:
        args += ["-f", script]
    for variable in variables:
        args += ["-D", variable]
    run = subprocess.run([*args, url], capture_output=True, text=True, cwd=folder)
    if "too many clients" in run.stderr:
        raise TooManyClients(run.stderr)
    if run.returncode != 0:
        raise RuntimeError(f"pgbench failed: {run.stderr.strip()[-500:]}")
    tps = float(re.search(r"tps = ([\d.]+)", run.stdout)[1])
    failed = re.search(r"number of failed transactions: (\d+)", run.stdout)
    latencies = sorted(int(line.split()[2]) for log in folder.glob("pglog*") for line in log.open())
    cut = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"rps": tps, "p50": cut[49] / 1000, "p99": cut[98] / 1000,
            "errors": int(failed[1]) if failed else 0}  # fmt: skip
