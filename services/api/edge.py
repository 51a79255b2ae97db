"""The ASGI layer around the application: request ids, request metrics and the draining flag."""

from __future__ import annotations

import re
import secrets
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
    return f"req_{secrets.token_hex(12)}"


class Drain:
    """Set once the process is shutting down: readiness answers 503 from then on."""

    def __init__(self) -> None:
        self.draining = False

    def start(self) -> None:
        self.draining = True


class Edge:
    """Wraps the app: assigns the request id, echoes it in a header, times every request."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope[REQUEST_ID] = rid  # type: ignore[literal-required]
        header = (b"x-request-id", rid.encode())
        status = 500
        started = time.perf_counter()

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
            route = scope.get("path_template") or "unmatched"
            metrics.observe(route, scope["method"], status, time.perf_counter() - started)
