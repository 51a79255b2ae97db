"""The API endpoints as data: path, what a key needs, and the answer (`read.py`)."""

from __future__ import annotations

from msgspec import Struct

from services.api import auth, read


class Route(Struct, frozen=True):
    """One endpoint: its path as Litestar declares it, what a key needs, its answer."""

    path: str
    access: auth.Access
    answer: read.Answer


SERVICE_ORDERS = Route("/api/v1/service-orders", auth.SERVICE_ORDERS, read.service_orders)
SERVICE_ORDER = Route(
    "/api/v1/service-orders/{order_id:str}", auth.SERVICE_ORDERS, read.service_order
)
ORDERS = Route("/v1/orders", auth.ORDERS, read.orders)
ORDER = Route("/v1/orders/{order_id:str}", auth.ORDERS, read.order)
ALL = (SERVICE_ORDERS, SERVICE_ORDER, ORDERS, ORDER)
