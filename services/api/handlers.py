"""Route handlers: parse, query, respond. Everything else lives in the modules they call."""

from __future__ import annotations

import asyncio

from litestar import MediaType, Request, Response, get
from litestar.params import FromPath

from services.api import metrics, openapi, queries, schemas
from services.api.auth import TENANT_KEY, authorize
from services.api.edge import REQUEST_ID
from services.api.errors import OrderNotFound
from services.api.read import fetch_one, fetch_page

_V1 = {
    "before_request": authorize,
    "opt": {"scope": "service_orders", "feature": "service_orders"},
    "security": openapi.SECURITY,
    "responses": openapi.SERVICE_ORDER_ERRORS,
    "tags": ["service orders"],
}
_V2 = {
    "before_request": authorize,
    "opt": {"scope": "orders:read"},
    "security": openapi.SECURITY,
    "responses": openapi.ORDER_ERRORS,
    "tags": ["orders and bookings"],
}


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=MediaType.JSON)


def _context(request: Request) -> tuple[str, dict[str, list[str]], str]:
    """(tenant, query parameters, request id) of an authorized request."""
    scope = request.scope
    return scope[TENANT_KEY], request.query_params.dict(), scope[REQUEST_ID]  # type: ignore[misc]


# ---- dialect 1 -----------------------------------------------------------------------------------


@get(
    "/api/v1/service-orders",
    summary="List service orders",
    operation_class=openapi.with_parameters(openapi.SERVICE_ORDER_LIST),
    **_V1,
)
async def list_service_orders(request: Request) -> Response[schemas.ServiceOrderList]:
    tenant, params, rid = _context(request)
    query = queries.service_orders_list(tenant, params, request.app.state.secret)
    page = await fetch_page(request.app.state.pool, query, request.app.state.secret)
    return _json(schemas.service_orders_page(page.docs, rid, query.limit, page.next_cursor))


@get(
    "/api/v1/service-orders/{order_id:str}",
    summary="Get one service order",
    operation_class=openapi.with_parameters(openapi.SERVICE_ORDER_ONE),
    **_V1,
)
async def get_service_order(
    request: Request, order_id: FromPath[str]
) -> Response[schemas.ServiceOrderOne]:
    tenant, params, rid = _context(request)
    doc = await fetch_one(
        request.app.state.pool, queries.service_order_get(tenant, order_id, params)
    )
    if doc is None:
        raise OrderNotFound
    return _json(schemas.service_order_one(doc, rid))


# ---- dialect 2 -----------------------------------------------------------------------------------


@get(
    "/v1/orders",
    summary="List orders and bookings",
    operation_class=openapi.with_parameters(openapi.ORDER_LIST),
    **_V2,
)
async def list_orders(request: Request) -> Response[schemas.OrderList]:
    tenant, params, _ = _context(request)
    query = queries.orders_list(tenant, params, request.app.state.secret)
    page = await fetch_page(request.app.state.pool, query, request.app.state.secret)
    return _json(schemas.orders_page(page.docs, page.next_cursor))


@get("/v1/orders/{order_id:str}", summary="Get one order or booking", **_V2)
async def get_order(request: Request, order_id: FromPath[str]) -> Response[schemas.OrderOne]:
    tenant = request.scope[TENANT_KEY]  # type: ignore[misc]
    doc = await fetch_one(request.app.state.pool, queries.order_get(tenant, order_id))
    if doc is None:
        raise OrderNotFound
    return _json(schemas.order_one(doc))


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
    body = await metrics.render(state.pool, state.redis, settings.streams, settings.consumer_group)
    return Response(body, media_type=metrics.CONTENT_TYPE)


ROUTES = [list_service_orders, get_service_order, list_orders, get_order, live, ready, prometheus]
