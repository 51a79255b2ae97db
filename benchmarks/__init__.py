"""The benchmarks: one command each (`.venv/bin/python -m benchmarks.NAME --help`), printing the
machine they ran on and their numbers.

What the benchmarks on the machine's PostgreSQL and Redis share is here: their common options
(`options`), the machine line (`machine`, `describe_machine`) and `run_main`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from collections.abc import Callable, Coroutine
from typing import Any

DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def say(text: str = "") -> None:
    print(text, flush=True)


def machine(pg_version: str | None = None, redis_version: str | None = None) -> str:
    """CPU model, cores, RAM, kernel, Python, the PostgreSQL and Redis versions when known, load."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    servers = f"PostgreSQL {pg_version}, " if pg_version else ""
    servers += f"Redis {redis_version}, " if redis_version else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem_kb / 2**20:.1f} GiB RAM, Linux {platform.release()}, "
        f"Python {platform.python_version()}, {servers}load {load}"
    )


async def describe_machine(db: Any, client: Any) -> str:
    """`machine()` with the versions that `db` (asyncpg pool or connection) and `client` (Redis)
    report."""
    pg_version = await db.fetchval("SHOW server_version")
    redis_version = (await client.info("server"))["redis_version"]
    return machine(pg_version, redis_version)


def options(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser (described by the first line of `doc`) with the options of every
    benchmark on the machine's servers: --seed, --database-url, --redis-url."""
    p = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n")[0])
    p.add_argument("--seed", type=int, default=42, help="the workload's seed (default 42)")
    p.add_argument("--database-url", default=DATABASE_URL)
    p.add_argument("--redis-url", default=REDIS_URL)
    return p


def run_main(
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, None]],
    parser: argparse.ArgumentParser,
    argv: list[str] | None = None,
    *,
    uvloop: bool = True,
) -> None:
    """Parse the command line and run `run(args)`: on uvloop when it is installed (as `orderview`
    runs its processes), on asyncio's own loop when `uvloop` is false or it is missing."""
    args = parser.parse_args(argv)
    if uvloop:
        try:
            import uvloop as loop
        except ImportError:
            pass
        else:
            return loop.run(run(args))
    asyncio.run(run(args))
