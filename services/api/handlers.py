"""Route handlers. Every API request takes one path, `respond`; the handlers only declare routes.

`respond` is the order in which a request is checked and answered, the same for all four endpoints:
parse -> authorize (key, scope, feature) -> [freshness wait] -> query -> ETag / 304 -> respond.
A step added there is added for every endpoint. Errors are raised, never returned: Litestar's
exception handlers (`errors.py`) render them in the dialect of the path.
"""

from __future__ import annotations

import asyncio

from litestar import MediaType, Request, Response, get
from litestar.response.base import ASGIResponse

from services.api import metrics, openapi, routes, schemas
from services.api.auth import tenant_of
from services.api.barrier import cache_for
from services.api.edge import REQUEST_ID
from services.api.etags import none_match
from services.api.read import Call

# A shared cache must never hand one tenant's order to another; a private one revalidates.
_PRIVATE = {"cache-control": "private, no-cache"}
_V1 = {"security": openapi.SECURITY, "tags": ["service orders"]}
_V2 = {"security": openapi.SECURITY, "tags": ["orders and bookings"]}


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=MediaType.JSON)


async def respond(request: Request, route: routes.Route, order_id: str = "") -> ASGIResponse:
    """An API request from start to answer (one place for every endpoint)."""
    state, scope = request.app.state, request.scope
    # parse: the query parameters as given (each answer validates its own, naming the parameter)
    params = request.query_params.dict()
    # authorize: 401 unauthorized, then 403 insufficient_scope, then 403 feature_disabled
    tenant = await tenant_of(state.key_cache, scope["headers"], route.access)
    # freshness: X-Min-Position (400 if malformed), waited for after every access check (503)
    demand = await state.freshness.require(scope["headers"])
    # query: the parameters checked (400), the SQL run, the documents rendered (404 if none)
    # the document cache answers; a request naming positions once it reflects them (barrier.py)
    cache = state.cache
    if demand is not None:
        cache = await cache_for(cache, state.cache_barrier, *demand)
    call = Call(state.pool, state.secret, tenant, params, scope[REQUEST_ID], order_id, cache)  # type: ignore[misc]
    reply = await route.answer(call)
    # conditional: the caller already holds these bytes (weak comparison, `*`, lists of tags)
    headers = {"etag": reply.etag, **_PRIVATE}
    if none_match(request.headers.get("if-none-match"), reply.etag):
        return ASGIResponse(status_code=304, headers=headers)
    # respond: the rendered bytes as they are (Litestar's low-level response: nothing to serialise)
    return ASGIResponse(body=reply.body, media_type=MediaType.JSON, headers=headers)


# ---- dialect 1 -----------------------------------------------------------------------------------


@get(
    routes.SERVICE_ORDERS.path,
    summary="List service orders",
    operation_class=openapi.with_parameters(openapi.SERVICE_ORDER_LIST),
    responses=openapi.ok(schemas.ServiceOrderList) | openapi.SERVICE_ORDER_ERRORS,
    **_V1,
)
async def list_service_orders(request: Request) -> ASGIResponse:
    return await respond(request, routes.SERVICE_ORDERS)


@get(
    routes.SERVICE_ORDER.path,
    summary="Get one service order",
    operation_class=openapi.with_parameters(openapi.SERVICE_ORDER_ONE),
    responses=openapi.ok(schemas.ServiceOrderOne) | openapi.SERVICE_ORDER_ERRORS,
    **_V1,
)
async def get_service_order(request: Request) -> ASGIResponse:
    return await respond(request, routes.SERVICE_ORDER, request.path_params["order_id"])


# ---- dialect 2 -----------------------------------------------------------------------------------


@get(
    routes.ORDERS.path,
    summary="List orders and bookings",
    operation_class=openapi.with_parameters(openapi.ORDER_LIST),
    responses=openapi.ok(schemas.OrderList) | openapi.ORDER_ERRORS,
    **_V2,
)
async def list_orders(request: Request) -> ASGIResponse:
    return await respond(request, routes.ORDERS)


@get(
    routes.ORDER.path,
    summary="Get one order or booking",
    operation_class=openapi.with_parameters(openapi.ORDER_ONE),
    responses=openapi.ok(schemas.OrderOne) | openapi.ORDER_ERRORS,
    **_V2,
)
async def get_order(request: Request) -> ASGIResponse:
    return await respond(request, routes.ORDER, request.path_params["order_id"])


# ---- operations ----------------------------------------------------------------------------------


@get("/health/live", tags=["operations"], summary="200 while the process can serve")
async def live() -> Response[dict[str, str]]:
    return _json(b'{"status":"live"}')


# Not ready while shutting down: from the stop signal on, the server accepts no new connection.
@get("/health/ready", tags=["operations"], summary="200 when PostgreSQL answers, else 503")
async def ready(request: Request) -> Response[dict[str, str]]:
    state = request.app.state
    try:
        async with asyncio.timeout(2):
            await state.pool.fetchval("SELECT 1")
    except Exception:  # any failure to answer means not ready
        return _json(b'{"status":"unavailable"}', 503)
    return _json(b'{"status":"ready"}')


@get("/metrics", tags=["operations"], summary="Prometheus metrics", media_type=metrics.CONTENT_TYPE)
async def prometheus(request: Request) -> Response[str]:
    state = request.app.state
    settings = state.settings
    metrics.cache_gauges(state.cache, state.cache_barrier)
    if state.replica is not None:
        await state.replica.refresh_lag()
    body = await metrics.render(state.pool, state.redis, settings.streams, settings.consumer_group)
    # The header given as is: from the media type alone Litestar adds a second charset to it.
    content_type = {"content-type": metrics.CONTENT_TYPE}
    return Response(body, media_type=metrics.CONTENT_TYPE, headers=content_type)


ROUTES = [list_service_orders, get_service_order, list_orders, get_order, live, ready, prometheus]
