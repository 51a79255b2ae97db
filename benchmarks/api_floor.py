"""The bound of a caching Litestar app on this machine: the bare app's answers kept forever.

Run by `benchmarks/api.py` under granian's own CLI, as the bare app is. Each path is read from
PostgreSQL once (the warm-up reads every id), then answered from a dict: no key check, no
parameter parsing, no invalidation, no metrics, no ETag. Nothing a caching API does per request
costs less than this, so its req/s is the most `orderview api` can reach on this machine with the
same framework and server; a target above it is out of reach whatever the API does.
"""

from __future__ import annotations

from litestar import Litestar, Response, get

from benchmarks import api_bare

_answers: dict[str, bytes] = {}


async def _kept(path: str, answer) -> Response[bytes]:
    body = _answers.get(path)
    if body is None:
        body = _answers[path] = (await answer()).content
    return Response(body, media_type="application/json")


@get("/one/{order_id:int}")
async def one(order_id: int) -> Response[bytes]:
    return await _kept(f"one/{order_id}", lambda: api_bare.one.fn(order_id))


@get("/list/{n:int}")
async def page(n: int) -> Response[bytes]:
    return await _kept(f"list/{n}", lambda: api_bare.page.fn(n))


@get("/deep")
async def deep() -> Response[bytes]:
    return await _kept("deep", api_bare.deep.fn)


app = Litestar(
    route_handlers=[one, page, deep],
    on_startup=[api_bare.open_pool],
    on_shutdown=[api_bare.close_pool],
    openapi_config=None,
    logging_config=None,
)
