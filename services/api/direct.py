"""The API endpoints answered straight from ASGI, in front of Litestar.

Litestar's per-request machinery (routing, the connection object, hooks, the response object) cost
more than the rest of a get by id together. The endpoints themselves are shared: the same `Route`s,
the same key check (`auth.tenant_of`), the same answers (`read`), the same errors
(`errors.problem_of`), so a request answered here gets the bytes Litestar would send. Only a GET
of an endpoint's canonical path comes here; anything else (another method or path, a trailing
slash, a root path, a Host header Litestar would refuse, a request before start-up finished) goes
to Litestar.
"""

from __future__ import annotations

from litestar._asgi.utils import is_valid_host
from litestar._parsers import parse_query_string  # the parser Litestar's handlers see
from litestar.datastructures import State
from litestar.types import Scope, Send

from services.api import errors, routes
from services.api.auth import tenant_of
from services.api.cache import for_request
from services.api.read import Call

_JSON = (b"content-type", b"application/json")


class Direct:
    """Finds and answers the requests it serves; the app's state holds the pool and key cache."""

    def __init__(self, state: State) -> None:
        self.state = state
        self._lists = {r.prefix: r for r in routes.ALL if not r.by_id}
        self._ones = [(r.prefix + "/", r) for r in routes.ALL if r.by_id]

    def match(self, scope: Scope) -> tuple[routes.Route, str] | None:
        """The route and path id of a request served here, else None."""
        if scope["method"] != "GET" or scope.get("root_path") or "key_cache" not in self.state:
            return None
        path = scope["path"]
        route, order_id = self._lists.get(path), ""
        if route is None:
            for prefix, candidate in self._ones:
                if path.startswith(prefix):
                    order_id = path[len(prefix) :]
                    if order_id and "/" not in order_id:
                        route = candidate
                    break
        if route is None:
            return None
        for name, value in scope["headers"]:
            if name == b"host":
                if not is_valid_host(value):
                    return None
                break
        return route, order_id

    async def serve(
        self, scope: Scope, route: routes.Route, order_id: str, rid: str, send: Send
    ) -> int:
        """Answer a matched request; its status."""
        state = self.state
        extra: list[tuple[bytes, bytes]] = []
        try:
            tenant = await tenant_of(state.key_cache, scope["headers"], route.access)
            params = _params(scope["query_string"])
            cache = for_request(state.cache, scope["headers"])
            call = Call(state.pool, state.secret, tenant, params, rid, order_id, cache)
            status, body = 200, await route.answer(call)
        except Exception as exc:  # every exception has its problem, as in Litestar's handlers
            problem = errors.problem_of(exc, scope["path"])
            status = problem.status
            body, extra = errors.error_document(problem, scope["path"], rid)
        headers = [
            *extra,
            _JSON,
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", rid.encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return status


def _params(query_string: bytes) -> dict[str, list[str]]:
    """The query parameters as Litestar's `request.query_params.dict()` gives them."""
    params: dict[str, list[str]] = {}
    for name, value in parse_query_string(query_string):
        params.setdefault(name, []).append(value)
    return params
