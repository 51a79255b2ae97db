"""The read API's queries: request parameters to whitelisted SQL with bind parameters. No I/O.

Every list is a keyset page served by an index range scan: the sort column and id, in the sort's
direction, after the cursor's position. Nullable sort columns split the null section off (a UNION
ALL of the non-null range and the null range, each an index range) so nulls come last both ways.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from projections.tables import ORDERS
from services.api.cursors import CursorError, Key, Position, decode_cursor, encode_cursor

STATUSES = ("draft", "pending", "confirmed", "in_progress", "completed", "cancelled")
TYPES = ("booking", "sale", "enquiry")
INCLUDES = ("items", "participant")
DEFAULT_LIMIT = 25
MAX_LIMIT = 100
MAX_TEXT = 1000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidParameter(ValueError):
    """A request parameter outside what the API allows: a 400 naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"`{parameter}` {message}")
        self.parameter = parameter


class SortKey(msgspec.Struct, frozen=True):
    """A sortable column: its API name, column, kind of value and whether it can be null."""

    name: str
    column: str
    kind: str  # "text" | "numeric" | "timestamp"
    nullable: bool


SORTS = {
    s.name: s
    for s in (
        SortKey("order_number", "order_number", "text", nullable=True),
        SortKey("total", "total", "numeric", nullable=False),
        SortKey("status", "status", "text", nullable=False),
        SortKey("submitted_at", "submitted_at", "timestamp", nullable=True),
        SortKey("created_at", "created_at", "timestamp", nullable=False),
    )
}
CREATED = SORTS["created_at"]

# Filter operators and the SQL each becomes; only these and only whitelisted columns reach SQL.
_OPERATORS = {
    "eq": "{column} = ${n}",
    "any": "{column} = ANY(${n}::text[])",
    "ge": "{column} >= ${n}",
    "le": "{column} <= ${n}",
    "gt": "{column} > ${n}",
}
FILTER_COLUMNS = frozenset(
    ("status", "event_key", "participant_id", "order_number", "type", "location_id")
    + ("scheduled_at", "created_at")
)


class Filter(msgspec.Struct, frozen=True, array_like=True):
    column: str
    op: str
    value: Any


class ListQuery(msgspec.Struct, frozen=True):
    """One list request, validated: what to select, how to order it, where to start."""

    dialect: str  # "v1" | "v2"
    tenant: str
    filters: tuple[Filter, ...]
    sort: SortKey
    descending: bool
    limit: int
    include: tuple[str, ...] = ()
    after: Position | None = None


class GetQuery(msgspec.Struct, frozen=True):
    dialect: str
    tenant: str
    order_id: int
    include: tuple[str, ...] = ()


Params = Mapping[str, Sequence[str]]


# ---- parameters ------------------------------------------------------------------------------


def _one(params: Params, name: str) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidParameter(name, "must be given at most once")
    return values[0]


def parse_limit(value: str | None) -> int:
    """`limit`: an integer from 1 to 100, default 25."""
    if value is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,4}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidParameter("limit", f"must be an integer from 1 to {MAX_LIMIT}, got {value!r}")
    return int(value)


def parse_int64(name: str, value: str) -> int:
    """A decimal integer within PostgreSQL bigint."""
    if not re.fullmatch(r"-?[0-9]{1,19}", value) or not INT64_MIN <= int(value) <= INT64_MAX:
        raise InvalidParameter(name, f"must be an integer (64-bit), got {_shown(value)}")
    return int(value)


def parse_text(name: str, value: str) -> str:
    """An exact-match string: at most 1000 characters, no NUL."""
    if len(value) > MAX_TEXT or "\x00" in value:
        raise InvalidParameter(name, f"must be at most {MAX_TEXT} characters, without NUL")
    return value


def parse_choices(name: str, value: str, allowed: Sequence[str], many: bool) -> list[str]:
    """One allowed value, or with `many` a comma-separated list of them."""
    parts = [p.strip() for p in value.split(",")] if many else [value]
    bad = [p for p in parts if p not in allowed]
    if bad or not parts:
        what = "one or more (comma-separated) of" if many else "one of"
        raise InvalidParameter(name, f"must be {what} {', '.join(allowed)}; got {_shown(value)}")
    return sorted(set(parts))


def parse_include(value: str | None) -> tuple[str, ...]:
    """`include`: comma-separated `items`, `participant` (empty parts are ignored)."""
    if value is None:
        return ()
    parts = {p.strip() for p in value.split(",")} - {""}
    bad = sorted(parts - set(INCLUDES))
    if bad:
        raise InvalidParameter("include", f"must be items and/or participant; got {_shown(value)}")
    return tuple(i for i in INCLUDES if i in parts)


def parse_instant(name: str, value: str, *, end_of_day: bool = False) -> datetime:
    """An ISO 8601 date (midnight UTC, or the day's last instant) or date-time (UTC if naive)."""
    try:
        if len(value) > 64:
            raise ValueError
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            day = date.fromisoformat(value)
            return datetime.combine(day, time.max if end_of_day else time.min, UTC)
        if not re.match(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}[T ]", value):
            raise ValueError
        moment = datetime.fromisoformat(value)
        # An offset can move a date-time past year 9999 or before year 1: OverflowError.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidParameter(
            name,
            "must be an ISO 8601 date (2024-01-31) or date-time (2024-01-31T10:00:00Z); "
            f"got {_shown(value)}",
        ) from None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


# ---- dialect 1: service orders ------------------------------------------------------------------


def service_orders_list(tenant: str, params: Params, secret: bytes) -> ListQuery:
    """`GET /api/v1/service-orders` as a query."""
    filters: list[Filter] = []
    if (value := _one(params, "event_key")) is not None:
        filters.append(Filter("event_key", "eq", parse_text("event_key", value)))
    statuses = params.get("status")
    if statuses:
        chosen = parse_choices("status", ",".join(statuses), STATUSES, many=True)
        # One status is an equality, so the (tenant, status, created_at, id) index orders it.
        one = len(chosen) == 1
        filters.append(Filter("status", "eq" if one else "any", chosen[0] if one else chosen))
    if (value := _one(params, "participant_id")) is not None:
        filters.append(Filter("participant_id", "eq", parse_int64("participant_id", value)))
    if (value := _one(params, "order_number")) is not None:
        filters.append(Filter("order_number", "eq", parse_text("order_number", value)))
    sort_name = _one(params, "sort")
    sort_name = CREATED.name if sort_name is None else sort_name
    if sort_name not in SORTS:
        raise InvalidParameter(
            "sort", f"must be one of {', '.join(SORTS)}; got {_shown(sort_name)}"
        )
    direction = _one(params, "order")
    # ASCII case only: str.upper() also makes "DESC" of "deſc" (a long s).
    direction = "DESC" if direction is None else direction.upper() if direction.isascii() else ""
    if direction not in ("ASC", "DESC"):
        raise InvalidParameter("order", "must be ASC or DESC (any case)")
    query = ListQuery(
        dialect="v1",
        tenant=tenant,
        filters=tuple(filters),
        sort=SORTS[sort_name],
        descending=direction == "DESC",
        limit=parse_limit(_one(params, "limit")),
        include=parse_include(_one(params, "include")),
    )
    return _with_cursor(query, _one(params, "cursor"), secret)


def service_order_get(tenant: str, order_id: str, params: Params) -> GetQuery:
    """`GET /api/v1/service-orders/{id}` as a query."""
    include = parse_include(_one(params, "include"))
    return GetQuery("v1", tenant, parse_int64("id", order_id), include)


# ---- dialect 2: orders and bookings -------------------------------------------------------------


def orders_list(tenant: str, params: Params, secret: bytes) -> ListQuery:
    """`GET /v1/orders` as a query: newest `createdAt` first, ties by id descending."""
    filters: list[Filter] = []
    if (value := _one(params, "status")) is not None:
        filters.append(Filter("status", "eq", parse_choices("status", value, STATUSES, False)[0]))
    if (value := _one(params, "type")) is not None:
        filters.append(Filter("type", "eq", parse_choices("type", value, TYPES, False)[0]))
    if (value := _one(params, "customerId")) is not None:
        filters.append(Filter("participant_id", "eq", _customer_id(value)))
    if (value := _one(params, "locationId")) is not None:
        filters.append(Filter("location_id", "eq", parse_text("locationId", value)))
    if (value := _one(params, "startDate")) is not None:
        filters.append(Filter("scheduled_at", "ge", parse_instant("startDate", value)))
    if (value := _one(params, "endDate")) is not None:
        end = parse_instant("endDate", value, end_of_day=True)
        filters.append(Filter("scheduled_at", "le", end))
    if (value := _one(params, "createdAfter")) is not None:
        filters.append(Filter("created_at", "gt", parse_instant("createdAfter", value)))
    limit = parse_limit(_one(params, "limit"))
    query = ListQuery("v2", tenant, tuple(filters), CREATED, descending=True, limit=limit)
    return _with_cursor(query, _one(params, "cursor"), secret)


def order_get(tenant: str, order_id: str) -> GetQuery:
    """`GET /v1/orders/{id}` (id `ord_<order id>`) as a query."""
    match = re.fullmatch(r"ord_(-?[0-9]{1,19})", order_id)
    if match is None or not INT64_MIN <= int(match[1]) <= INT64_MAX:
        raise InvalidParameter("id", f"must be ord_<integer order id>; got {_shown(order_id)}")
    return GetQuery("v2", tenant, int(match[1]))


def _customer_id(value: str) -> int:
    match = re.fullmatch(r"cust_(-?[0-9]{1,19})", value)
    if match is None or not INT64_MIN <= int(match[1]) <= INT64_MAX:
        raise InvalidParameter("customerId", f"must be cust_<participant id>; got {_shown(value)}")
    return int(match[1])


# ---- cursors -------------------------------------------------------------------------------------

_context_encoder = msgspec.msgpack.Encoder()


def context(query: ListQuery) -> bytes:
    """What a cursor is bound to: dialect, tenant, filters, sort and direction."""
    filters = sorted((f.column, f.op, f.value) for f in query.filters)
    return _context_encoder.encode(
        [query.dialect, query.tenant, filters, query.sort.name, query.descending]
    )


def _with_cursor(query: ListQuery, cursor: str | None, secret: bytes) -> ListQuery:
    if cursor is None:
        return query
    try:
        after = decode_cursor(secret, context(query), cursor)
        bind_key(query.sort, after.key)
    except CursorError as exc:
        raise InvalidParameter("cursor", f"{exc}: use the cursor of the previous page") from None
    return msgspec.structs.replace(query, after=after)


def key_of(sort: SortKey, value: Any) -> Key:
    """A sort column's value as a cursor holds it."""
    if value is None or sort.kind == "text":
        return value
    if sort.kind == "numeric":
        return str(value)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def bind_key(sort: SortKey, key: Key) -> Any:
    """A cursor's key as the bind parameter of the sort column; CursorError if it cannot be."""
    if key is None:
        return None
    try:
        if sort.kind == "text" and isinstance(key, str):
            return key
        if sort.kind == "numeric" and isinstance(key, str):
            return Decimal(key)
        if sort.kind == "timestamp" and isinstance(key, int):
            return _EPOCH + timedelta(microseconds=key)
    except (InvalidOperation, OverflowError):
        pass
    raise CursorError("does not fit this sort")


def next_cursor(query: ListQuery, last_key: Any, last_id: int, secret: bytes) -> str:
    """The cursor of the page after the row (last_key, last_id)."""
    return encode_cursor(secret, context(query), key_of(query.sort, last_key), last_id)


# ---- SQL -----------------------------------------------------------------------------------------


def _columns(query: ListQuery | GetQuery) -> str:
    if query.dialect == "v2":
        return "doc_v2, customer_v2"
    return ", ".join(["doc_v1", *(f"{name}_v1" for name in query.include)])


def list_sql(query: ListQuery) -> tuple[str, list[Any]]:
    """The SELECT of one page (limit + 1 rows, to tell whether there is more) and its arguments."""
    args: list[Any] = [query.tenant]
    where = ["tenant = $1"]
    for f in query.filters:
        if f.column not in FILTER_COLUMNS:
            raise ValueError(f"not a filter column: {f.column}")
        args.append(f.value)
        where.append(_OPERATORS[f.op].format(column=f.column, n=len(args)))
    sort, after = query.sort, query.after
    column = SORTS[sort.name].column  # the whitelist, whatever the struct says
    direction, op = ("DESC", "<") if query.descending else ("ASC", ">")
    select = f"SELECT id, {column} AS k, {_columns(query)} FROM {ORDERS} WHERE "
    args.append(query.limit + 1)
    limit = f"LIMIT ${len(args)}"
    branches = []
    if after is None or after.key is not None:
        conditions = [*where, f"{column} IS NOT NULL"] if sort.nullable else list(where)
        if after is not None:
            args += [bind_key(sort, after.key), after.id]
            conditions.append(f"({column}, id) {op} (${len(args) - 1}, ${len(args)})")
        order = f"ORDER BY {column} {direction}, id {direction}"
        branches.append(f"{select}{' AND '.join(conditions)} {order} {limit}")
    if sort.nullable:
        conditions = [*where, f"{column} IS NULL"]
        if after is not None and after.key is None:
            args.append(after.id)
            conditions.append(f"id {op} ${len(args)}")
        branches.append(f"{select}{' AND '.join(conditions)} ORDER BY id {direction} {limit}")
    if len(branches) == 1:
        return branches[0], args
    union = " UNION ALL ".join(f"({b})" for b in branches)
    order = f"ORDER BY k IS NULL, k {direction}, id {direction}"
    return f"SELECT * FROM ({union}) AS page {order} {limit}", args


def get_sql(query: GetQuery) -> tuple[str, list[Any]]:
    """The SELECT of one order of the tenant."""
    # participant_id: the document cache drops the order when that participant changes
    sql = f"SELECT {_columns(query)}, participant_id FROM {ORDERS} WHERE tenant = $1 AND id = $2"
    return sql, [query.tenant, query.order_id]
