"""Lists of both dialects: every filter, sort and direction, include and limit edge, walked page by
page and compared with an ordering computed here from the orders the test made."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.integration.test_api.conftest import Spec, expected_ids, order_id, walk

SORTS = ["order_number", "total", "status", "submitted_at", "created_at"]


@pytest.mark.parametrize("direction", ["ASC", "desc"])
@pytest.mark.parametrize("sort", SORTS)
async def test_every_sort_walks_every_order_once_in_order_with_nulls_last(
    loaded, client, acme, sort, direction
):
    params = {"sort": sort, "order": direction, "limit": 7}

    orders = await walk(client, "/api/v1/service-orders", params, acme)

    descending = direction.upper() == "DESC"
    assert [o["id"] for o in orders] == expected_ids(loaded["acme"], sort, descending)


def test_the_catalogue_has_nulls_and_ties_in_every_sort(loaded):
    for sort in ("order_number", "submitted_at"):
        assert any(getattr(s, sort) is None for s in loaded["acme"])
    for sort in SORTS:
        values = [
            v for v in (s.total if sort == "total" else getattr(s, sort) for s in loaded["acme"])
        ]
        assert len(set(values)) < len(values), sort


V1_FILTERS = [
    pytest.param({"event_key": "expo"}, lambda s: s.event_key == "expo", id="event_key-exact-case"),
    pytest.param({"status": "confirmed"}, lambda s: s.status == "confirmed", id="status-one"),
    pytest.param(
        {"status": "pending,cancelled"},
        lambda s: s.status in ("pending", "cancelled"),
        id="status-list",
    ),
    pytest.param(
        [("status", "draft"), ("status", "completed")],
        lambda s: s.status in ("draft", "completed"),
        id="status-repeated-combines",
    ),
    pytest.param({"participant_id": "1"}, lambda s: s.participant_id == 1, id="participant"),
    pytest.param(
        {"participant_id": "3"}, lambda s: s.participant_id == 3, id="participant-without-event"
    ),
    pytest.param({"order_number": "SO-1"}, lambda s: s.order_number == "SO-1", id="order_number"),
    pytest.param({"order_number": "éclair"}, lambda s: s.order_number == "éclair", id="unicode"),
    pytest.param({"order_number": "nope"}, lambda s: False, id="no-match-is-empty"),
    pytest.param({"unknown": "x", "page": "2"}, lambda s: True, id="unknown-params-ignored"),
]


@pytest.mark.parametrize(("params", "keep"), V1_FILTERS)
async def test_service_order_filters_keep_exactly_the_matching_orders(
    loaded, client, acme, params, keep
):
    pairs = list(params.items()) if isinstance(params, dict) else params
    pairs.append(("limit", "4"))
    orders = []
    cursor = None
    while True:
        response = await client.get(
            "/api/v1/service-orders",
            params=pairs + ([("cursor", cursor)] if cursor else []),
            headers=acme,
        )
        assert response.status_code == 200, response.text
        orders += response.json()["data"]
        cursor = response.json()["meta"]["pagination"]["next_cursor"]
        if cursor is None:
            break

    assert [o["id"] for o in orders] == expected_ids(loaded["acme"], "created_at", True, keep)


@pytest.mark.parametrize(
    ("params", "sort", "keep"),
    [
        pytest.param(
            {"status": "confirmed,completed", "sort": "total", "order": "asc"},
            "total",
            lambda s: s.status in ("confirmed", "completed"),
            id="status-by-total",
        ),
        pytest.param(
            {"participant_id": "2", "sort": "order_number", "order": "DESC"},
            "order_number",
            lambda s: s.participant_id == 2,
            id="participant-by-order-number-desc",
        ),
        pytest.param(
            {"event_key": "summit", "sort": "submitted_at", "order": "Asc"},
            "submitted_at",
            lambda s: s.event_key == "summit",
            id="event-key-by-submitted-at",
        ),
    ],
)
async def test_filters_and_sorts_combine(loaded, client, acme, params, sort, keep):
    descending = params["order"].upper() == "DESC"

    orders = await walk(client, "/api/v1/service-orders", {**params, "limit": 3}, acme)

    assert [o["id"] for o in orders] == expected_ids(loaded["acme"], sort, descending, keep)


@pytest.mark.parametrize(
    ("include", "members"),
    [
        pytest.param(None, set(), id="none"),
        pytest.param("items", {"items"}, id="items"),
        pytest.param("participant", {"participant"}, id="participant"),
        pytest.param("items,participant", {"items", "participant"}, id="both"),
        pytest.param("participant, items", {"items", "participant"}, id="both-spaced"),
    ],
)
async def test_include_adds_exactly_the_asked_members(loaded, client, acme, include, members):
    params = {"limit": 100} | ({"include": include} if include else {})
    response = await client.get("/api/v1/service-orders", params=params, headers=acme)

    specs = {s.id: s for s in loaded["acme"]}
    for order in response.json()["data"]:
        assert {"items", "participant"} & set(order) == members
        spec = specs[order["id"]]
        if "items" in members:
            lines = [(Decimal(str(i["unit_price"])), i["quantity"]) for i in order["items"]]
            assert lines == [(Decimal(p), q) for p, q in spec.items]
            assert [i["id"] for i in order["items"]] == list(range(1, len(spec.items) + 1))
        if "participant" in members:
            expected = {1: "Ana María", 2: "John Doe"}.get(spec.participant_id)
            if expected is None:
                assert order["participant"] is None
            else:
                assert order["participant"]["name"] == expected
        assert Decimal(str(order["total"])) == spec.total
        assert order["event_participant_id"] == spec.participant_id


async def test_one_service_order_takes_include(loaded, client, acme):
    response = await client.get("/api/v1/service-orders/1?include=items", headers=acme)

    body = response.json()
    assert body["data"]["id"] == 1 and "items" in body["data"]
    assert "participant" not in body["data"]
    assert body["meta"] == {"request_id": response.headers["x-request-id"]}


@pytest.mark.parametrize(
    ("limit", "size", "more"),
    [
        pytest.param(None, 25, True, id="default-25"),
        pytest.param("1", 1, True, id="one"),
        pytest.param("59", 59, True, id="one-short-of-all"),
        pytest.param("60", 60, False, id="exactly-all"),
        pytest.param("100", 60, False, id="max"),
        pytest.param("007", 7, True, id="leading-zeros"),
    ],
)
async def test_limit_sizes_the_page_and_says_whether_there_is_more(
    loaded, client, acme, limit, size, more
):
    params = {"limit": limit} if limit else {}

    body = (await client.get("/api/v1/service-orders", params=params, headers=acme)).json()

    assert len(body["data"]) == size
    assert body["meta"]["pagination"]["has_more"] is more
    assert body["meta"]["pagination"]["limit"] == int(limit or 25)
    assert (body["meta"]["pagination"]["next_cursor"] is not None) is more


async def test_walking_one_order_a_page_gives_every_order_once(loaded, client, acme):
    orders = await walk(client, "/api/v1/service-orders", {"limit": 1, "sort": "total"}, acme)

    assert [o["id"] for o in orders] == expected_ids(loaded["acme"], "total", True)


# ---- dialect 2 -----------------------------------------------------------------------------------


def _at(text: str) -> datetime:
    return (
        datetime.fromisoformat(text).replace(tzinfo=UTC)
        if "+" not in text
        else datetime.fromisoformat(text)
    )


def _on_or_after(day: str):
    return lambda s: s.scheduled_at is not None and s.scheduled_at >= _at(day)


V2_FILTERS = [
    pytest.param({}, lambda s: True, id="none"),
    pytest.param({"status": "in_progress"}, lambda s: s.status == "in_progress", id="status"),
    pytest.param({"type": "booking"}, lambda s: s.type == "booking", id="type"),
    pytest.param({"customerId": "cust_2"}, lambda s: s.participant_id == 2, id="customer"),
    pytest.param({"locationId": "loc_a"}, lambda s: s.location_id == "loc_a", id="location"),
    pytest.param({"startDate": "2024-01-03"}, _on_or_after("2024-01-03"), id="start-date"),
    pytest.param(
        {"startDate": "2024-01-03T09:00:00Z"},
        _on_or_after("2024-01-03T09:00:00"),
        id="start-date-time-inclusive",
    ),
    pytest.param(
        {"endDate": "2024-01-02"},
        lambda s: s.scheduled_at is not None and s.scheduled_at < _at("2024-01-03"),
        id="end-date-is-the-whole-day",
    ),
    pytest.param(
        {"endDate": "2024-01-02T09:00:00+00:00"},
        lambda s: s.scheduled_at is not None and s.scheduled_at <= _at("2024-01-02T09:00:00"),
        id="end-date-time-inclusive",
    ),
    pytest.param(
        {"startDate": "2024-01-02", "endDate": "2024-01-03"},
        lambda s: (
            s.scheduled_at is not None and _at("2024-01-02") <= s.scheduled_at < _at("2024-01-04")
        ),
        id="date-range",
    ),
    pytest.param(
        {"createdAfter": "2024-01-01T00:35:00Z"},
        lambda s: s.created_at > _at("2024-01-01T00:35:00"),
        id="created-after-is-strict",
    ),
    pytest.param(
        {"createdAfter": "2024-01-01T02:35:00+02:00"},
        lambda s: s.created_at > _at("2024-01-01T00:35:00"),
        id="created-after-with-offset",
    ),
    pytest.param(
        {"createdAfter": "2024-01-01"},
        lambda s: s.created_at > _at("2024-01-01"),
        id="created-after-date-is-midnight",
    ),
    pytest.param(
        {"status": "cancelled", "type": "sale", "locationId": "loc_b"},
        lambda s: (s.status, s.type, s.location_id) == ("cancelled", "sale", "loc_b"),
        id="combined",
    ),
]


@pytest.mark.parametrize(("params", "keep"), V2_FILTERS)
async def test_order_filters_keep_the_matching_orders_newest_first(
    loaded, client, acme, params, keep
):
    orders = await walk(client, "/v1/orders", {**params, "limit": 5}, acme)

    assert [order_id(o) for o in orders] == expected_ids(loaded["acme"], "created_at", True, keep)


async def test_orders_show_their_customer_and_services(loaded, client, acme):
    specs: dict[int, Spec] = {s.id: s for s in loaded["acme"]}

    orders = await walk(client, "/v1/orders", {"limit": 100}, acme)

    for order in orders:
        spec = specs[order_id(order)]
        names = {1: "Ana María", 2: "John Doe"}
        assert order["customerId"] == (
            f"cust_{spec.participant_id}" if spec.participant_id else None
        )
        assert order["customerName"] == names.get(spec.participant_id)
        assert [(Decimal(str(x["price"])), x["quantity"]) for x in order["services"]] == [
            (Decimal(p), q) for p, q in spec.items
        ]
        assert order["status"] == spec.status and order["type"] == spec.type
