"""The bare app a user could write instead: Litestar + asyncpg, the same queries, the same bytes.

Run by `benchmarks/api.py` under granian's own CLI (one worker, uvloop). No key check, no
parameter parsing, no metrics, no OpenAPI: a route per scenario that runs the API's SQL
(built once, `api_ceiling.queries`) and joins the stored documents as the API does.
Paths: /one/<id>, /list/<n> (the n-th list of BENCH_LISTS) and /deep.
"""

from __future__ import annotations

import os

import asyncpg
from litestar import Litestar, Response, get

from benchmarks.api_ceiling import ONE, page_body, queries
from orderview.db import create_pool

_pools: list[asyncpg.Pool] = []
_QUERIES = queries()
_TENANT = os.environ["BENCH_TENANT"]


async def open_pool() -> None:
    _pools.append(
        await create_pool(
            os.environ["ORDERVIEW_DATABASE_URL"],
            name="bare",
            min_size=10,
            max_size=10,
            read_only=True,
        )
    )


async def close_pool() -> None:
    await _pools.pop().close()


@get("/one/{order_id:int}")
async def one(order_id: int) -> Response[bytes]:
    doc = await _pools[0].fetchval(ONE, _TENANT, order_id)
    body = b'{"data":%s,"meta":{"request_id":"req_x"}}' % doc
    return Response(body, media_type="application/json")


@get("/list/{n:int}")
async def page(n: int) -> Response[bytes]:
    sql, args = _QUERIES[f"list{n}"]
    return Response(page_body(await _pools[0].fetch(sql, *args)), media_type="application/json")


@get("/deep")
async def deep() -> Response[bytes]:
    sql, args = _QUERIES["deep"]
    return Response(page_body(await _pools[0].fetch(sql, *args)), media_type="application/json")


app = Litestar(
    route_handlers=[one, page, deep],
    on_startup=[open_pool],
    on_shutdown=[close_pool],
    openapi_config=None,
    logging_config=None,
)
