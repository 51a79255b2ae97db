"""The ASGI layer around the application: request ids, request metrics and the draining flag.

It hands the requests `direct.py` serves to it, and everything else to the Litestar app.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.api import metrics

if TYPE_CHECKING:
    from services.api.direct import Direct

REQUEST_ID = "orderview.request_id"
_WELL_FORMED = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's well-formed X-Request-ID, else a new `req_<random>`."""
    for name, value in headers:
        if name == b"x-request-id":
            if _WELL_FORMED.fullmatch(value):
                return value.decode()
            break
    # An id, not a secret: the process's PRNG (reseeded after fork) spares a getrandom() call.
    return f"req_{random.getrandbits(96):024x}"


class Drain:
    """Set once the process is shutting down: readiness answers 503 from then on."""

    def __init__(self) -> None:
        self.draining = False

    def start(self) -> None:
        self.draining = True


class Edge:
    """Wraps the app: assigns the request id, echoes it in a header, times every request."""

    def __init__(self, app: ASGIApp, drain: Drain, direct: Direct | None = None) -> None:
        self.app = app
        self.drain = drain
        self.direct = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope[REQUEST_ID] = rid  # type: ignore[literal-required]
        status = 500
        started = time.perf_counter()
        matched = self.direct.match(scope) if self.direct is not None else None
        try:
            if matched is not None:
                route, order_id = matched
                scope["path_template"] = route.template
                status = await self.direct.serve(scope, route, order_id, rid, send)  # type: ignore[union-attr]
                return
            header = (b"x-request-id", rid.encode())

            async def send_with_id(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    message["headers"] = [
                        *(h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"),
                        header,
                    ]
                await send(message)

            await self.app(scope, receive, send_with_id)
        finally:
            route_label = scope.get("path_template") or "unmatched"
            metrics.observe(route_label, scope["method"], status, time.perf_counter() - started)
