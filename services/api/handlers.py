"""Route handlers: parse, query, respond. Everything else lives in the modules they call."""

from __future__ import annotations

import asyncio

from litestar import MediaType, Request, Response, get
from litestar.params import FromPath

from services.api import metrics, openapi, routes, schemas
from services.api.auth import TENANT_KEY, authorize
from services.api.cache import for_request
from services.api.edge import REQUEST_ID
from services.api.read import Call

_V1 = {
    "before_request": authorize,
    "security": openapi.SECURITY,
    "responses": openapi.SERVICE_ORDER_ERRORS,
    "tags": ["service orders"],
}
_V2 = {
    "before_request": authorize,
    "security": openapi.SECURITY,
    "responses": openapi.ORDER_ERRORS,
    "tags": ["orders and bookings"],
}


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=MediaType.JSON)


async def _answer(request: Request, order_id: str = "") -> Response:
    """The route's answer to an authorized request (the same one `direct.py` gives)."""
    scope, state = request.scope, request.app.state
    route: routes.Route = request.route_handler.opt["route"]
    params = request.query_params.dict()
    cache = for_request(state.cache, scope["headers"])
    call = Call(
        state.pool, state.secret, scope[TENANT_KEY], params, scope[REQUEST_ID], order_id, cache
    )  # type: ignore[misc]
    return _json(await route.answer(call))


# ---- dialect 1 -----------------------------------------------------------------------------------


@get(
    routes.SERVICE_ORDERS.path,
    summary="List service orders",
    operation_class=openapi.with_parameters(openapi.SERVICE_ORDER_LIST),
    opt={"route": routes.SERVICE_ORDERS},
    **_V1,
)
async def list_service_orders(request: Request) -> Response[schemas.ServiceOrderList]:
    return await _answer(request)


@get(
    routes.SERVICE_ORDER.path,
    summary="Get one service order",
    operation_class=openapi.with_parameters(openapi.SERVICE_ORDER_ONE),
    opt={"route": routes.SERVICE_ORDER},
    **_V1,
)
async def get_service_order(
    request: Request, order_id: FromPath[str]
) -> Response[schemas.ServiceOrderOne]:
    return await _answer(request, order_id)


# ---- dialect 2 -----------------------------------------------------------------------------------


@get(
    routes.ORDERS.path,
    summary="List orders and bookings",
    operation_class=openapi.with_parameters(openapi.ORDER_LIST),
    opt={"route": routes.ORDERS},
    **_V2,
)
async def list_orders(request: Request) -> Response[schemas.OrderList]:
    return await _answer(request)


@get(routes.ORDER.path, summary="Get one order or booking", opt={"route": routes.ORDER}, **_V2)
async def get_order(request: Request, order_id: FromPath[str]) -> Response[schemas.OrderOne]:
    return await _answer(request, order_id)


# ---- operations ----------------------------------------------------------------------------------


@get("/health/live", tags=["operations"], summary="200 while the process can serve")
async def live() -> Response[dict[str, str]]:
    return _json(b'{"status":"live"}')


@get("/health/ready", tags=["operations"], summary="200 when PostgreSQL answers and not draining")
async def ready(request: Request) -> Response[dict[str, str]]:
    state = request.app.state
    if state.drain.draining:
        return _json(b'{"status":"draining"}', 503)
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
    metrics.cache_gauges(state.cache)
    body = await metrics.render(state.pool, state.redis, settings.streams, settings.consumer_group)
    # The header given as is: from the media type alone Litestar adds a second charset to it.
    content_type = {"content-type": metrics.CONTENT_TYPE}
    return Response(body, media_type=metrics.CONTENT_TYPE, headers=content_type)


ROUTES = [list_service_orders, get_service_order, list_orders, get_order, live, ready, prometheus]
