"""The ceiling of this machine for the read API: a bare ASGI app, one asyncpg query, same bytes.

Run by `benchmarks/api.py` under uvicorn (uvloop, httptools) like the API. Paths: /list, /deep
(the queries of BENCH_LIST / BENCH_DEEP, JSON [sql, args]) and /one/<id>.
"""

from __future__ import annotations

import json
import os

import asyncpg

from orderview.db import create_pool
from projections.documents import splice
from projections.tables import ORDERS
from services.api.queries import list_sql, service_orders_list

_pool: asyncpg.Pool | None = None
_QUERIES: dict[str, tuple[str, list]] = {}
_ONE = f"SELECT doc_v1 FROM {ORDERS} WHERE tenant = $1 AND id = $2"
_HEADERS = [(b"content-type", b"application/json")]


def _prepare() -> None:
    """The SQL of each list, built once (the ceiling does no per-request Python but the join)."""
    secret = os.environ["ORDERVIEW_CURSOR_SECRET"].encode()
    for name in ("list", "deep"):
        params = {k: [v] for k, v in json.loads(os.environ[f"BENCH_{name.upper()}"]).items()}
        query = service_orders_list(os.environ["BENCH_TENANT"], params, secret)
        _QUERIES[name] = list_sql(query)


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
                    max_size=10,
                    read_only=True,
                )
                _prepare()
                await send({"type": "lifespan.startup.complete"})
            else:
                await _pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path.startswith("/one/"):
        doc = await _pool.fetchval(_ONE, os.environ["BENCH_TENANT"], int(path[5:]))
        body = b'{"data":%s,"meta":{"request_id":"req_x"}}' % doc
    else:
        sql, args = _QUERIES[path[1:]]
        rows = await _pool.fetch(sql, *args)
        docs = b",".join(splice(r[2]) for r in rows[:25])  # same bytes as the API
        body = b'{"data":[%s],"meta":{"request_id":"req_x","pagination":{}}}' % docs
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": body})
