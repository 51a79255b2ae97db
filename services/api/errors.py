"""Exceptions to error responses, in the shape of the dialect whose path was requested.

`problem_of` decides what an exception means (status, code, message, parameter); `error_document`
renders it. Litestar calls `_respond` for every exception: the API's own, a 404 or 405 of its
router, a refused Host header.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from msgspec import Struct

from services.api.auth import Forbidden, Unauthorized
from services.api.edge import REQUEST_ID, request_id
from services.api.freshness import PositionNotReached
from services.api.queries import InvalidParameter
from services.api.read import OrderNotFound
from services.api.schemas import error_body

__all__ = ["HANDLERS", "OrderNotFound", "Problem", "error_document", "problem_of"]

log = logging.getLogger("orderview.api")
_CHALLENGE = [(b"www-authenticate", b"Bearer")]
_RETRY = [(b"retry-after", b"1")]


class Problem(Struct, frozen=True):
    """What went wrong, as the client is told."""

    status: int
    code: str
    message: str
    parameter: str | None = None


def dialect(path: str) -> str:
    """`v2` under /v1/, else `v1` (the service-orders shape)."""
    return "v2" if path.startswith("/v1/") or path == "/v1" else "v1"


def error_document(
    problem: Problem, path: str, rid: str
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The error body in the dialect of `path`, and the headers it needs beyond content-type."""
    body = error_body(dialect(path), problem.code, problem.message, problem.parameter, rid)
    if problem.status == 401:
        return body, _CHALLENGE
    return body, _RETRY if problem.code == "position_not_reached" else []


def _invalid_parameter(exc: InvalidParameter, path: str) -> Problem:
    return Problem(400, "invalid_parameter", str(exc), exc.parameter)


def _unauthorized(exc: Unauthorized, path: str) -> Problem:
    return Problem(401, "unauthorized", str(exc))


def _forbidden(exc: Forbidden, path: str) -> Problem:
    return Problem(403, exc.code, str(exc))


def _not_found(exc: Exception, path: str) -> Problem:
    message = "no such order" if isinstance(exc, OrderNotFound) else "no such endpoint"
    return Problem(404, "not_found", message)


def _method_not_allowed(exc: MethodNotAllowedException, path: str) -> Problem:
    return Problem(405, "method_not_allowed", "this API only answers GET")


def _http_error(exc: HTTPException, path: str) -> Problem:
    code = "invalid_request" if exc.status_code < 500 else "internal_error"
    return Problem(exc.status_code, code, str(exc.detail))


def _position_not_reached(exc: PositionNotReached, path: str) -> Problem:
    message = "the read model has not reached the entries named in `X-Min-Position` yet"
    return Problem(503, "position_not_reached", message, "X-Min-Position")


def _unavailable(exc: Exception, path: str) -> Problem:
    log.warning("database unavailable", extra={"error": repr(exc)})
    return Problem(503, "unavailable", "the database cannot be reached")


def _internal_error(exc: Exception, path: str) -> Problem:
    log.error("unexpected error", exc_info=exc, extra={"path": path})
    return Problem(500, "internal_error", "unexpected error")


_PROBLEMS: dict[type[Exception], Callable] = {
    InvalidParameter: _invalid_parameter,
    Unauthorized: _unauthorized,
    Forbidden: _forbidden,
    OrderNotFound: _not_found,
    PositionNotReached: _position_not_reached,
    NotFoundException: _not_found,
    MethodNotAllowedException: _method_not_allowed,
    HTTPException: _http_error,
    asyncpg.PostgresConnectionError: _unavailable,
    asyncpg.CannotConnectNowError: _unavailable,
    asyncpg.TooManyConnectionsError: _unavailable,
    asyncpg.InterfaceError: _unavailable,
    # A connection dying under a request (PostgreSQL shutting down or terminating backends):
    # asyncpg raises AdminShutdownError (57P01), or InternalClientError when the next query meets
    # the connection still consuming the FATAL error.
    asyncpg.exceptions.OperatorInterventionError: _unavailable,
    asyncpg.InternalClientError: _unavailable,
    OSError: _unavailable,
    TimeoutError: _unavailable,
    Exception: _internal_error,
}


def problem_of(exc: Exception, path: str) -> Problem:
    """What an exception raised while answering `path` means (the most specific class decides)."""
    for kind in type(exc).__mro__:
        describe = _PROBLEMS.get(kind)
        if describe is not None:
            return describe(exc, path)
    return _internal_error(exc, path)


def _respond(request: Request, exc: Exception) -> Response:
    """Litestar's exception handler for every class above."""
    scope = request.scope
    problem = problem_of(exc, scope["path"])
    rid = scope.get(REQUEST_ID) or request_id(scope["headers"])
    body, headers = error_document(problem, scope["path"], rid)
    extra = {name.decode(): value.decode() for name, value in headers}
    if isinstance(exc, HTTPException) and exc.headers:  # the Allow header of a 405
        extra = exc.headers | extra
    return Response(
        body, status_code=problem.status, media_type=MediaType.JSON, headers=extra or None
    )


HANDLERS = dict.fromkeys(_PROBLEMS, _respond)
