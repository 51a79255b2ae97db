"""Shared steps of the integration tests: publish, project until caught up, read the tables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import asyncpg
import redis.asyncio as redis

from orderview.settings import Settings
from projections.documents import splice
from projections.tables import ORDERS
from services.projector import run_projector
from services.publish import publish

# The `orderview` console command of the interpreter running the tests (PATH may not have it).
ORDERVIEW = str(Path(sys.executable).with_name("orderview"))


def run_orderview(
    env: dict[str, str], *args: str, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `orderview ARGS` to completion with `env`; its output captured as text."""
    return subprocess.run(
        [ORDERVIEW, *args], env=env, capture_output=True, text=True, timeout=60, stdin=stdin
    )


async def publish_lines(
    client: redis.Redis, settings: Settings, lines: Iterable[str | bytes]
) -> int:
    """XADD lines (raw `event` values) to the settings' streams by the sharding rule."""
    data = [line.encode() if isinstance(line, str) else line for line in lines]
    return await publish(client, settings.streams, iter(data))


async def outstanding(client: redis.Redis, settings: Settings) -> int:
    """Entries of the group not yet acknowledged or not yet delivered over every stream; -1: unknown."""
    total = 0
    for stream in settings.streams:
        groups = {_text(g["name"]): g for g in await client.xinfo_groups(stream)}
        group = groups.get(settings.consumer_group)
        if group is None or group.get("lag") is None:
            return -1
        total += group["lag"] + group["pending"]
    return total


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.asynccontextmanager
async def projector(settings: Settings) -> AsyncIterator[asyncio.Task]:
    """An in-process projector task, stopped (its batch finished) on exit."""
    stopping = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stopping))
    try:
        yield task
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)


async def wait_until_caught_up(
    client: redis.Redis, settings: Settings, timeout: float = 30, allowed: int = 0
) -> None:
    """Wait until at most `allowed` entries are outstanding (e.g. held gaps)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            left = await outstanding(client, settings)
        except redis.ResponseError:
            left = -1  # the group does not exist yet
        if 0 <= left <= allowed:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"projector not caught up after {timeout}s: {left} outstanding")
        await asyncio.sleep(0.05)


async def project(client: redis.Redis, settings: Settings, lines: Iterable[str | bytes]) -> None:
    """Publish lines and run a projector until every entry is settled."""
    await publish_lines(client, settings, lines)
    async with projector(settings):
        await wait_until_caught_up(client, settings)


async def service_orders(pool: asyncpg.Pool, tenant: str) -> dict[int, dict]:
    """Dialect 1 documents (items and participant included) of a tenant, by order id."""
    rows = await pool.fetch(
        f"SELECT id, doc_v1, items_v1, participant_v1 FROM {ORDERS} WHERE tenant = $1", tenant
    )
    return {
        r["id"]: json.loads(
            splice(
                r["doc_v1"], b'"items":' + r["items_v1"], b'"participant":' + r["participant_v1"]
            )
        )
        for r in rows
    }


async def orders_v2(pool: asyncpg.Pool, tenant: str) -> dict[int, dict]:
    """Dialect 2 documents of a tenant, by order id."""
    rows = await pool.fetch(
        f"SELECT id, doc_v2, customer_v2 FROM {ORDERS} WHERE tenant = $1", tenant
    )
    return {r["id"]: json.loads(splice(r["doc_v2"], r["customer_v2"])) for r in rows}


async def dead_letters(client: redis.Redis, stream: str) -> list[dict[str, str]]:
    """Every entry of a stream's dead-letter stream, decoded."""
    entries = await client.xrange(f"{stream}:dlq")
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()} for _, fields in entries
    ]
