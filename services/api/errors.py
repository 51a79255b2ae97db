"""Exceptions to error responses, in the shape of the dialect whose path was requested."""

from __future__ import annotations

import logging

import asyncpg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException

from services.api.auth import Forbidden, Unauthorized
from services.api.edge import REQUEST_ID, request_id
from services.api.queries import InvalidParameter
from services.api.schemas import error_body

log = logging.getLogger("orderview.api")


class OrderNotFound(Exception):
    """No order with this id for this tenant (another tenant's order included)."""


def dialect(path: str) -> str:
    """`v2` under /v1/, else `v1` (the service-orders shape)."""
    return "v2" if path.startswith("/v1/") or path == "/v1" else "v1"


def error_response(
    request: Request, status: int, code: str, message: str, parameter: str | None = None
) -> Response:
    """An error in the requested dialect's shape."""
    rid = request.scope.get(REQUEST_ID) or request_id(request.scope["headers"])
    body = error_body(dialect(request.scope["path"]), code, message, parameter, rid)
    headers = {"www-authenticate": "Bearer"} if status == 401 else None
    return Response(body, status_code=status, media_type=MediaType.JSON, headers=headers)


def invalid_parameter(request: Request, exc: InvalidParameter) -> Response:
    return error_response(request, 400, "invalid_parameter", str(exc), exc.parameter)


def unauthorized(request: Request, exc: Unauthorized) -> Response:
    return error_response(request, 401, "unauthorized", str(exc))


def forbidden(request: Request, exc: Forbidden) -> Response:
    return error_response(request, 403, exc.code, str(exc))


def not_found(request: Request, exc: Exception) -> Response:
    message = "no such order" if isinstance(exc, OrderNotFound) else "no such endpoint"
    return error_response(request, 404, "not_found", message)


def method_not_allowed(request: Request, exc: MethodNotAllowedException) -> Response:
    return error_response(request, 405, "method_not_allowed", "this API only answers GET")


def http_error(request: Request, exc: HTTPException) -> Response:
    code = "invalid_request" if exc.status_code < 500 else "internal_error"
    return error_response(request, exc.status_code, code, str(exc.detail))


def unavailable(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable", extra={"error": repr(exc)})
    return error_response(request, 503, "unavailable", "the database cannot be reached")


def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error", extra={"path": request.scope["path"]})
    return error_response(request, 500, "internal_error", "unexpected error")


HANDLERS = {
    InvalidParameter: invalid_parameter,
    Unauthorized: unauthorized,
    Forbidden: forbidden,
    OrderNotFound: not_found,
    NotFoundException: not_found,
    MethodNotAllowedException: method_not_allowed,
    HTTPException: http_error,
    asyncpg.PostgresConnectionError: unavailable,
    asyncpg.CannotConnectNowError: unavailable,
    asyncpg.TooManyConnectionsError: unavailable,
    asyncpg.InterfaceError: unavailable,
    # A connection dying under a request (PostgreSQL shutting down or terminating backends):
    # asyncpg raises AdminShutdownError (57P01), or InternalClientError when the next query meets
    # the connection still consuming the FATAL error.
    asyncpg.exceptions.OperatorInterventionError: unavailable,
    asyncpg.InternalClientError: unavailable,
    OSError: unavailable,
    TimeoutError: unavailable,
    Exception: internal_error,
}
