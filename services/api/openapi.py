"""The OpenAPI description: parameters of both dialects, error responses, the bearer scheme.

Handlers read their query parameters themselves (so that every bad value is the dialect's 400
naming it), so the parameters are declared here and added to each operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from importlib import resources
from typing import Any

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, Operation, Parameter, Schema, SecurityScheme
from litestar.openapi.spec.enums import OpenAPIType
from litestar.plugins import OpenAPISchemaPlugin
from litestar.static_files import create_static_files_router

from services.api import schemas
from services.api.queries import DEFAULT_LIMIT, INCLUDES, MAX_LIMIT, SORTS, STATUSES, TYPES

DESCRIPTION = """\
The orders read model in two dialects.

* **Service orders** (`/api/v1/service-orders`): scope `service_orders`, tenant feature
  `service_orders`. Errors: `{"error": {"code", "message", "parameter"}, "meta": {"request_id"}}`.
* **Orders and bookings** (`/v1/orders`): scope `orders:read`. Errors:
  `{"success": false, "error": {"code", "message"}}`.

Every request needs `Authorization: Bearer <api key>`; a key belongs to one tenant and every
query is confined to it (another tenant's order is a 404, exactly like a missing one). Errors:
401 `unauthorized` (missing, malformed, unknown or revoked key), then 403 `insufficient_scope`,
then 403 `feature_disabled`; 400 `invalid_parameter` naming the parameter; 404 `not_found`;
405 `method_not_allowed`; 503 `unavailable` when the database cannot be reached.

`X-Min-Position: <stream key>@<entry id>` (the id XADD returned; several comma-separated) makes
the answer wait until those entries are applied or dead-lettered, at most
ORDERVIEW_MIN_POSITION_WAIT_MS (default 1000), else 503 `position_not_reached` with `Retry-After`;
access checks come first.

`X-Request-ID` (1-128 of `A-Za-z0-9._-`) is used as given, else one `req_<random>` is made; it is
echoed in the response header and, in the service-orders dialect, in `meta.request_id`.

Lists are keyset-paginated: pass the previous page's `next_cursor` / `nextCursor` as `cursor`.
Cursors are opaque and signed; a cursor is bound to the tenant, the filters and the sort (not to
`limit` or `include`, which may change between pages) and is a 400 naming `cursor` otherwise.
Walking every page returns each matching order exactly once, in order, even while other orders
change. String sorts are by code point; nulls sort last in both directions; ties break by order
id in the sort's direction.

Every 200 carries a weak `ETag` that changes whenever anything in the body but the request id
would (an order's version and its participant's copy for a get; the page's orders, `has_more` and
the cursor for a list) and `Cache-Control: private, no-cache`. A request whose `If-None-Match`
matches it (weak comparison; `*` and lists of tags allowed; a malformed header matches nothing) is
answered 304 with no body, the same `ETag` and `X-Request-ID`, after every access check: a 304 is
never given where the answer would be a 400, 401, 403 or 404.

Where the source APIs are silent: unknown query parameters are ignored; a parameter given twice is
a 400 (except `status` of service orders, whose values are combined); integer parameters are
64-bit; exact-match strings are at most 1000 characters; a date-time without an offset is UTC;
money is a JSON number with 2 fractional digits, `tax_rate` a JSON number.
"""


def _query(name: str, description: str, schema: Schema) -> Parameter:
    return Parameter(name=name, param_in="query", description=description, schema=schema)


# On every endpoint (added by `with_parameters`).
IF_NONE_MATCH = Parameter(
    name="If-None-Match",
    param_in="header",
    description="The ETag of an earlier 200 (or `*`, or a list): a 304 with no body if unchanged.",
    schema=Schema(type=OpenAPIType.STRING),
)


_STRING = Schema(type=OpenAPIType.STRING)
_LIMIT = _query(
    "limit",
    f"Orders per page, 1-{MAX_LIMIT}.",
    Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
)
_CURSOR = _query("cursor", "The previous page's next cursor (opaque).", _STRING)
_INCLUDE = _query(
    "include",
    "Comma-separated related data: `items` (ordered by item id), `participant` (or null).",
    Schema(type=OpenAPIType.STRING, examples=[",".join(INCLUDES)]),
)
MIN_POSITION = Parameter(
    name="X-Min-Position",
    param_in="header",
    description=(
        "Read your writes: `<stream key>@<entry id>` (the id XADD returned), several "
        "comma-separated. The answer waits until every entry of that stream up to the id is "
        "applied or dead-lettered (and replayed by the replica the API reads from), at most "
        "ORDERVIEW_MIN_POSITION_WAIT_MS, then 503 `position_not_reached` with `Retry-After`. "
        "Malformed, or a stream the service does not read: 400 naming `X-Min-Position`."
    ),
    schema=Schema(type=OpenAPIType.STRING, examples=["orders:events@1718000000000-0"]),
)
_DATE = Schema(type=OpenAPIType.STRING, examples=["2024-01-31", "2024-01-31T10:00:00Z"])

SERVICE_ORDER_LIST = [
    _query("event_key", "Exact match.", _STRING),
    _query(
        "status",
        "One status or a comma-separated list.",
        Schema(type=OpenAPIType.STRING, examples=["confirmed", "pending,confirmed"]),
    ),
    _query("participant_id", "Integer, exact match.", Schema(type=OpenAPIType.INTEGER)),
    _query("order_number", "Exact match.", _STRING),
    _query(
        "sort",
        "Sort field; strings by code point, nulls last, ties by id.",
        Schema(type=OpenAPIType.STRING, enum=list(SORTS), default="created_at"),
    ),
    _query(
        "order",
        "Direction, any case.",
        Schema(type=OpenAPIType.STRING, enum=["ASC", "DESC", "asc", "desc"], default="DESC"),
    ),
    _INCLUDE,
    _LIMIT,
    _CURSOR,
    MIN_POSITION,
]
SERVICE_ORDER_ONE = [_INCLUDE, MIN_POSITION]
ORDER_ONE = [MIN_POSITION]
ORDER_LIST = [
    _LIMIT,
    _CURSOR,
    _query("status", "Status.", Schema(type=OpenAPIType.STRING, enum=list(STATUSES))),
    _query("type", "Order type.", Schema(type=OpenAPIType.STRING, enum=list(TYPES))),
    _query(
        "customerId",
        "`cust_<participant id>`.",
        Schema(type=OpenAPIType.STRING, pattern="^cust_-?[0-9]+$"),
    ),
    _query("locationId", "Exact match.", _STRING),
    _query(
        "startDate",
        "Scheduled at or after: a date (its start, UTC) or a date-time. "
        "Orders without scheduledAt never match.",
        _DATE,
    ),
    _query(
        "endDate",
        "Scheduled at or before: a date means the whole of that day (UTC), or a date-time. "
        "Orders without scheduledAt never match.",
        _DATE,
    ),
    _query(
        "createdAfter",
        "Created strictly after: a date means midnight UTC of that day, or a date-time.",
        _DATE,
    ),
    MIN_POSITION,
]


class MoneyAsNumber(OpenAPISchemaPlugin):
    """Decimal fields (money, rates) are served as JSON numbers, so document them as numbers
    (Litestar's default for Decimal is a string)."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is Decimal

    def to_openapi_schema(self, field_definition: Any, schema_creator: Any) -> Schema:
        return Schema(type=OpenAPIType.NUMBER)


def with_parameters(parameters: list[Parameter]) -> type[Operation]:
    """An Operation class that adds `parameters` to what Litestar found in the signature."""

    @dataclass
    class Documented(Operation):
        def __post_init__(self) -> None:
            self.parameters = [*(self.parameters or []), *parameters, IF_NONE_MATCH]

    return Documented


def _errors(container: type) -> dict[int, ResponseSpec]:
    described = {
        400: "invalid_parameter: a parameter outside what is allowed (named in the error)",
        401: "unauthorized: missing, malformed, unknown or revoked API key",
        403: "insufficient_scope, then feature_disabled",
        404: "not_found: no such order for this tenant",
        503: "unavailable: the database cannot be reached; position_not_reached: the entries "
        "named in X-Min-Position were not applied in time (with Retry-After)",
    }
    return {
        status: ResponseSpec(data_container=container, description=text, generate_examples=False)
        for status, text in described.items()
    }


SERVICE_ORDER_ERRORS = _errors(schemas.ServiceOrderError)
ORDER_ERRORS = _errors(schemas.OrderError)


def ok(container: type) -> dict[int, ResponseSpec]:
    """The 200 of a handler that answers with raw bytes (`ASGIResponse`, which has no schema)."""
    described = HTTPStatus.OK.description  # as Litestar describes a 200 it documents itself
    return {
        200: ResponseSpec(data_container=container, description=described, generate_examples=False),
        304: ResponseSpec(
            data_container=None,
            description="Not modified: the If-None-Match tag matches (no body; ETag repeated)",
        ),
    }


SECURITY = [{"bearer": []}]


def openapi_config() -> OpenAPIConfig:
    """The schema at /schema/openapi.json and its browsable pages under /schema."""
    return OpenAPIConfig(
        title="orderview read API",
        version="1.0.0",
        description=DESCRIPTION,
        path="/schema",
        render_plugins=[_swagger_page()],
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API key made by `orderview keys create`.",
                )
            }
        ),
        create_examples=False,
    )


# Swagger UI's scripts and styles, served by the process itself from the files the `swagger-ui-py`
# package ships (Swagger UI 5, which reads OpenAPI 3.1; Apache-2.0, its LICENSE beside them): the
# page works without internet access.
ASSETS = "/schema/assets"


def _swagger_page() -> SwaggerRenderPlugin:
    return SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{ASSETS}/swagger-ui-bundle.js",
        css_url=f"{ASSETS}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS}/favicon-32x32.png'>",
    )


def docs_assets() -> Router:
    """The docs page's scripts, styles and icon, same-origin (no CDN)."""
    return create_static_files_router(
        path=ASSETS,
        directories=[resources.files("swagger_ui") / "static"],  # type: ignore[list-item]
        name="docs-assets",
        # Revalidated each time: after an upgrade a browser must not mix old and new files.
        cache_control=CacheControlHeader(no_cache=True),
    )
