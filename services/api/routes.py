"""The API endpoints as data: path, access and answer, served by Litestar and by `direct.py` alike."""

from __future__ import annotations

from msgspec import Struct

from services.api import auth, read


class Route(Struct, frozen=True):
    """One endpoint: its path (a list, or one order under `{order_id}`), what a key needs, its answer."""

    prefix: str
    by_id: bool
    access: auth.Access
    answer: read.Answer

    @property
    def template(self) -> str:
        """The path as Litestar's `path_template` gives it (the `route` label of the metrics)."""
        return f"{self.prefix}/{{order_id}}" if self.by_id else self.prefix

    @property
    def path(self) -> str:
        """The path as Litestar declares it."""
        return f"{self.prefix}/{{order_id:str}}" if self.by_id else self.prefix


SERVICE_ORDERS = Route("/api/v1/service-orders", False, auth.SERVICE_ORDERS, read.service_orders)
SERVICE_ORDER = Route("/api/v1/service-orders", True, auth.SERVICE_ORDERS, read.service_order)
ORDERS = Route("/v1/orders", False, auth.ORDERS, read.orders)
ORDER = Route("/v1/orders", True, auth.ORDERS, read.order)
ALL = (SERVICE_ORDERS, SERVICE_ORDER, ORDERS, ORDER)
