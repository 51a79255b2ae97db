"""The `getpos` scenario of `benchmarks/api.py`: the `get` requests naming a settled position.

Issue 12: "a request with `X-Min-Position` that is already satisfied costs <= 10 % more than one
without". A real position, settled the real way: one event of a tenant the benchmark does not read
is appended to a stream of the run's own and projected by the projector (in this process) into the
benchmark's database, and the API target is given that stream and Redis. Every `getpos` request
names that entry, `<stream>@<id>`: settled before the target started, as a producer's position is
once its write has been read back.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets

import redis.asyncio as redis

from orderview.settings import load_settings
from projections.announce import applied_channel
from services.projector import run_projector

HEADER = "X-Min-Position"


def stream_key() -> str:
    return f"orderview-bench:{secrets.token_hex(4)}:events"


def redis_url() -> str:
    return os.environ.get("ORDERVIEW_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def target_env(position: str) -> dict[str, str]:
    """What the API targets need to know positions on the stream of `position`."""
    return {"ORDERVIEW_REDIS_URL": redis_url(), "ORDERVIEW_STREAMS": position.rpartition("@")[0]}


async def settled_position(database_url: str, stream: str) -> str:
    """Append one event to `stream`, project it, and return its position once acknowledged."""
    event = {
        "id": "bench-position-1", "type": "order.created", "tenant": "bench-position",
        "aggregate_id": 1, "seq": 1, "at": "2024-01-01T00:00:00Z",
        "data": {"type": "sale", "currency": "EUR", "items": []},
    }  # fmt: skip
    env = {"ORDERVIEW_DATABASE_URL": database_url, "ORDERVIEW_METRICS_PORT": "0",
           "ORDERVIEW_BLOCK_MS": "100"} | target_env(f"{stream}@")  # fmt: skip
    settings = load_settings(env)
    client = redis.from_url(redis_url())
    announcements = client.pubsub()
    stopping = asyncio.Event()
    try:
        await announcements.subscribe(applied_channel(stream))  # the projector's, after its XACK
        entry = (await client.xadd(stream, {"event": json.dumps(event)})).decode()
        projector = asyncio.create_task(run_projector(settings, stopping))
        async with asyncio.timeout(30):
            while not await _acknowledged(client, stream, settings.consumer_group, entry):
                await announcements.get_message(timeout=1)
        stopping.set()
        await asyncio.wait_for(projector, 30)
        return f"{stream}@{entry}"
    finally:
        stopping.set()
        await announcements.aclose()
        await client.aclose()


async def _acknowledged(client: redis.Redis, stream: str, group: str, entry: str) -> bool:
    try:
        groups = {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
    except redis.ResponseError:  # no group yet
        return False
    info = groups.get(group)
    return info is not None and info["last-delivered-id"].decode() == entry and not info["pending"]


async def drop_stream(stream: str) -> None:
    client = redis.from_url(redis_url())
    try:
        await client.delete(stream)
    finally:
        await client.aclose()
