"""The ASGI layer around the Litestar app: request ids and request metrics, for every response.

A plain ASGI wrapper rather than Litestar middleware, because Litestar's middleware runs for routed
requests only: a 404, a 405 or a refused Host header must carry the request id and be counted too.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterable

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from services.api import metrics

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


class Edge:
    """Wraps the app: assigns the request id, echoes it in a header, times every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope[REQUEST_ID] = rid  # type: ignore[literal-required]
        status = 500
        started = time.perf_counter()
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

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # Litestar's router puts the matched route's template in the scope (HTTPScope).
            route_label = scope.get("path_template") or "unmatched"
            metrics.observe(route_label, scope["method"], status, time.perf_counter() - started)
