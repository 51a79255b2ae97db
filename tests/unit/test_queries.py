"""Query building: parameters to whitelisted SQL with bind parameters; keyset conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.api.cursors import Position
from services.api.queries import (
    CREATED,
    SORTS,
    InvalidParameter,
    ListQuery,
    bind_key,
    key_of,
    list_sql,
    next_cursor,
    order_get,
    orders_list,
    parse_instant,
    service_orders_list,
)

SECRET = b"unit-test-secret-0123456789"


def params(**values: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in values.items()}


def test_defaults_are_created_at_descending_25():
    query = service_orders_list("acme", {}, SECRET)

    assert (query.sort, query.descending, query.limit, query.include) == (CREATED, True, 25, ())


@pytest.mark.parametrize(
    ("values", "parameter"),
    [
        pytest.param({"sort": "id"}, "sort", id="sort"),
        pytest.param({"order": "sideways"}, "order", id="order"),
        pytest.param({"limit": "101"}, "limit", id="limit"),
        pytest.param({"include": "state"}, "include", id="include"),
        pytest.param({"status": "open"}, "status", id="status"),
        pytest.param({"participant_id": "x"}, "participant_id", id="participant"),
        pytest.param({"cursor": "zzz"}, "cursor", id="cursor"),
    ],
)
def test_bad_service_order_parameters_are_named(values, parameter):
    with pytest.raises(InvalidParameter) as raised:
        service_orders_list("acme", params(**values), SECRET)
    assert raised.value.parameter == parameter


def test_values_only_ever_reach_sql_as_bind_parameters():
    hostile = "x' OR 1=1; --"
    query = service_orders_list(
        "acme", params(event_key=hostile, order_number=hostile, sort="order_number"), SECRET
    )

    sql, args = list_sql(query)

    assert hostile not in sql and "acme" not in sql
    assert args.count(hostile) == 2 and args[0] == "acme"


@pytest.mark.parametrize("sort", list(SORTS))
@pytest.mark.parametrize("descending", [False, True])
def test_every_sort_orders_by_its_column_then_id_in_one_direction(sort, descending):
    query = ListQuery("v1", "acme", (), SORTS[sort], descending, 25)

    sql, _ = list_sql(query)

    word = "DESC" if descending else "ASC"
    assert f"ORDER BY {sort} {word}, id {word}" in sql
    assert ("UNION ALL" in sql) is SORTS[sort].nullable


def test_a_cursor_in_the_null_section_reads_only_the_null_range():
    after = Position(1, None, 10)
    query = ListQuery("v1", "acme", (), SORTS["submitted_at"], True, 25, (), after)

    sql, args = list_sql(query)

    assert "UNION" not in sql and "submitted_at IS NULL AND id < $3" in sql
    assert args == ["acme", 26, 10]


def test_a_cursor_with_a_key_continues_the_range_and_then_the_nulls():
    after = Position(1, "SO-9", 10)
    query = ListQuery("v1", "acme", (), SORTS["order_number"], False, 25, (), after)

    sql, args = list_sql(query)

    assert "(order_number, id) > ($3, $4)" in sql and "order_number IS NULL" in sql
    assert args == ["acme", 26, "SO-9", 10]


@pytest.mark.parametrize(
    ("kind", "value"),
    [("total", Decimal("81.56")), ("created_at", datetime(2024, 1, 20, 14, 30, 0, 5, UTC)),
     ("order_number", "SO-1")],
)  # fmt: skip
def test_sort_values_survive_the_trip_through_a_cursor(kind, value):
    assert bind_key(SORTS[kind], key_of(SORTS[kind], value)) == value


def test_a_cursor_is_refused_with_other_filters():
    first = service_orders_list("acme", params(status="draft"), SECRET)
    cursor = next_cursor(first, datetime(2024, 1, 1, tzinfo=UTC), 5, SECRET)

    assert service_orders_list("acme", params(status="draft", cursor=cursor), SECRET).after
    with pytest.raises(InvalidParameter):
        service_orders_list("acme", params(status="pending", cursor=cursor), SECRET)
    with pytest.raises(InvalidParameter):
        service_orders_list("globex", params(status="draft", cursor=cursor), SECRET)


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2024-01-31", False, datetime(2024, 1, 31, tzinfo=UTC)),
        ("2024-01-31", True, datetime(2024, 1, 31, 23, 59, 59, 999999, UTC)),
        ("2024-01-31T10:00:00Z", False, datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T12:00:00+02:00", False, datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("2024-01-31T10:00:00", False, datetime(2024, 1, 31, 10, tzinfo=UTC)),
        ("9999-12-31", True, datetime(9999, 12, 31, 23, 59, 59, 999999, UTC)),
    ],
)
def test_dates_and_date_times_are_instants_in_utc(text, end_of_day, expected):
    assert parse_instant("startDate", text, end_of_day=end_of_day) == expected


@pytest.mark.parametrize("text", ["2024-02-30", "31/01/2024", "2024-01-31T25:00", "now", "1e9"])
def test_bad_dates_are_refused(text):
    with pytest.raises(InvalidParameter):
        parse_instant("startDate", text)


def test_orders_filters_map_to_their_columns():
    query = orders_list(
        "acme", params(customerId="cust_7", locationId="loc", type="sale", status="draft"), SECRET
    )

    assert {(f.column, f.value) for f in query.filters} == {
        ("participant_id", 7), ("location_id", "loc"), ("type", "sale"), ("status", "draft"),
    }  # fmt: skip


@pytest.mark.parametrize(
    "text", ["42", "ord_", "ord_x", "ORD_1", "ord_1.5", "ord_99999999999999999999"]
)
def test_bad_order_ids_are_refused(text):
    with pytest.raises(InvalidParameter):
        order_get("acme", text)
