"""The ceiling of this machine for the read API: a bare ASGI app, one asyncpg query, same bytes.

Run by `benchmarks/api.py` under uvicorn (uvloop, httptools). Paths: /list/<n> (the n-th list of
BENCH_LISTS, JSON list of API parameters), /deep (BENCH_DEEP) and /one/<id>.
"""

from __future__ import annotations

import json
import os
from typing import Any

import asyncpg

from orderview.db import create_pool
from projections.documents import splice
from projections.tables import ORDERS
from services.api.queries import list_sql, service_orders_list

_pool: asyncpg.Pool | None = None
_QUERIES: dict[str, tuple[str, list]] = {}
ONE = f"SELECT doc_v1 FROM {ORDERS} WHERE tenant = $1 AND id = $2"
_HEADERS = [(b"content-type", b"application/json")]


def queries() -> dict[str, tuple[str, list[Any]]]:
    """The SQL of each list (`list0`…, `deep`), built once as the API builds it."""
    secret = os.environ["ORDERVIEW_CURSOR_SECRET"].encode()
    tenant = os.environ["BENCH_TENANT"]
    lists = json.loads(os.environ["BENCH_LISTS"])
    named = {f"list{n}": p for n, p in enumerate(lists)} | {
        "deep": json.loads(os.environ["BENCH_DEEP"])
    }
    return {
        name: list_sql(service_orders_list(tenant, {k: [v] for k, v in params.items()}, secret))
        for name, params in named.items()
    }


def page_body(rows: list) -> bytes:
    """The page the API sends for these rows (limit + 1 fetched), its pagination left empty."""
    docs = b",".join(splice(r[2]) for r in rows[:25])  # same bytes as the API
    return b'{"data":[%s],"meta":{"request_id":"req_x","pagination":{}}}' % docs


async def app(scope, receive, send) -> None:
    global _pool
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # The API's pool settings (jit off, no reset query on release): same queries.
                _pool = await create_pool(
                    os.environ["ORDERVIEW_DATABASE_URL"],
                    name="ceiling",
                    min_size=10,  # whole from the start: a full server refuses now, not mid-run
                    max_size=10,
                    read_only=True,
                )
                _QUERIES.update(queries())
                await send({"type": "lifespan.startup.complete"})
            else:
                await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/one/"):
        doc = await _pool.fetchval(ONE, os.environ["BENCH_TENANT"], int(path[5:]))
        body = b'{"data":%s,"meta":{"request_id":"req_x"}}' % doc
    else:
        sql, args = _QUERIES[path[1:].replace("/", "")]
        body = page_body(await _pool.fetch(sql, *args))
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": body})
