"""Errors of both dialects: every bad parameter is a 400 naming it, auth is 401 then 403 then 403,
a missing order is a 404, each in its dialect's shape with the request id where it has a place."""

from __future__ import annotations

import pytest

V1 = "/api/v1/service-orders"
V2 = "/v1/orders"

BAD_PARAMETERS = [
    pytest.param(V1, "sort=bogus", "sort", id="v1-unknown-sort"),
    pytest.param(V1, "sort=id", "sort", id="v1-sort-by-unlisted-column"),
    pytest.param(V1, "sort=", "sort", id="v1-empty-sort"),
    pytest.param(V1, "order=up", "order", id="v1-bad-direction"),
    pytest.param(V1, "order=", "order", id="v1-empty-direction"),
    pytest.param(V1, "order=de%C5%BFc", "order", id="v1-direction-upper-cases-to-desc"),
    pytest.param(V1, "limit=0", "limit", id="v1-limit-zero"),
    pytest.param(V1, "limit=101", "limit", id="v1-limit-over-100"),
    pytest.param(V1, "limit=-1", "limit", id="v1-limit-negative"),
    pytest.param(V1, "limit=1.5", "limit", id="v1-limit-fraction"),
    pytest.param(V1, "limit=abc", "limit", id="v1-limit-text"),
    pytest.param(V1, "limit=", "limit", id="v1-limit-empty"),
    pytest.param(V1, "limit=%2B5", "limit", id="v1-limit-plus-sign"),
    pytest.param(V1, "limit=5&limit=6", "limit", id="v1-limit-twice"),
    pytest.param(V1, "cursor=abc", "cursor", id="v1-malformed-cursor"),
    pytest.param(V1, "cursor=", "cursor", id="v1-empty-cursor"),
    pytest.param(V1, "cursor=%F0%9F%98%80", "cursor", id="v1-emoji-cursor"),
    pytest.param(V1, "include=items,bogus", "include", id="v1-unknown-include"),
    pytest.param(V1, "status=bogus", "status", id="v1-unknown-status"),
    pytest.param(V1, "status=confirmed,", "status", id="v1-status-empty-item"),
    pytest.param(V1, "status=", "status", id="v1-empty-status"),
    pytest.param(V1, "participant_id=abc", "participant_id", id="v1-participant-text"),
    pytest.param(V1, "participant_id=1e3", "participant_id", id="v1-participant-exponent"),
    pytest.param(
        V1, "participant_id=99999999999999999999", "participant_id", id="v1-participant-too-big"
    ),
    pytest.param(V1, "event_key=a%00b", "event_key", id="v1-nul-in-text"),
    pytest.param(V1, "order_number=" + "x" * 1001, "order_number", id="v1-text-too-long"),
    pytest.param(V1 + "/abc", "", "id", id="v1-non-integer-id"),
    pytest.param(V1 + "/1.5", "", "id", id="v1-fraction-id"),
    pytest.param(V1 + "/99999999999999999999", "", "id", id="v1-id-too-big"),
    pytest.param(V1 + "/1", "include=bogus", "include", id="v1-get-unknown-include"),
    pytest.param(V2, "status=bogus", "status", id="v2-unknown-status"),
    pytest.param(V2, "status=confirmed,pending", "status", id="v2-status-list"),
    pytest.param(V2, "type=rental", "type", id="v2-unknown-type"),
    pytest.param(V2, "customerId=7", "customerId", id="v2-customer-without-prefix"),
    pytest.param(V2, "customerId=cust_x", "customerId", id="v2-customer-not-integer"),
    pytest.param(V2, "startDate=2024-13-01", "startDate", id="v2-bad-month"),
    pytest.param(V2, "startDate=yesterday", "startDate", id="v2-start-text"),
    pytest.param(V2, "endDate=2024-02-30", "endDate", id="v2-bad-day"),
    pytest.param(V2, "endDate=", "endDate", id="v2-empty-end"),
    pytest.param(V2, "createdAfter=2024-01-01T25:00:00Z", "createdAfter", id="v2-bad-hour"),
    pytest.param(V2, "createdAfter=1704067200", "createdAfter", id="v2-epoch-seconds"),
    pytest.param(
        V2, "startDate=9999-12-31T23:59:59-01:00", "startDate", id="v2-start-past-year-9999-in-utc"
    ),
    pytest.param(
        V2, "createdAfter=0001-01-01T00:00:00%2B01:00", "createdAfter", id="v2-before-year-1-in-utc"
    ),
    pytest.param(V2, "limit=0", "limit", id="v2-limit-zero"),
    pytest.param(V2, "limit=1000", "limit", id="v2-limit-over-100"),
    pytest.param(V2, "cursor=abc", "cursor", id="v2-malformed-cursor"),
    pytest.param(V2 + "/42", "", "id", id="v2-id-without-prefix"),
    pytest.param(V2 + "/ord_x", "", "id", id="v2-id-not-integer"),
]


@pytest.mark.parametrize(("path", "query", "parameter"), BAD_PARAMETERS)
async def test_a_bad_parameter_is_a_400_naming_it_in_the_dialects_shape(
    loaded, client, acme, path, query, parameter
):
    response = await client.get(f"{path}?{query}", headers=acme)

    assert response.status_code == 400, response.text[:300]
    body = response.json()
    if path.startswith("/v1/"):
        assert body == {
            "success": False,
            "error": {"code": "invalid_parameter", "message": body["error"]["message"]},
        }
    else:
        rid = response.headers["x-request-id"]
        assert body["error"]["code"] == "invalid_parameter"
        assert body["error"]["parameter"] == parameter
        assert body["meta"] == {"request_id": rid}
        assert set(body) == {"error", "meta"} and set(body["error"]) == {
            "code",
            "message",
            "parameter",
        }
    assert f"`{parameter}`" in body["error"]["message"]


AUTH = [
    pytest.param(None, id="no-header"),
    pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
    pytest.param("Bearer", id="bearer-without-key"),
    pytest.param("Bearer ", id="bearer-empty"),
    pytest.param("Bearer ovk_unknown", id="unknown-key"),
    pytest.param("Bearer a b", id="two-words"),
    pytest.param("Bearer ' OR 1=1 --", id="sql-as-key"),
]


@pytest.mark.parametrize("authorization", AUTH)
@pytest.mark.parametrize("path", [V1, V1 + "/1", V2, V2 + "/ord_1"])
async def test_a_missing_or_unknown_key_is_a_401(loaded, client, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = await client.get(path + "?limit=bogus", headers=headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    if path.startswith("/v1/"):
        assert response.json()["success"] is False


@pytest.mark.parametrize(
    ("scopes", "features", "path", "code"),
    [
        pytest.param(
            "orders:read", ("service_orders",), V1, "insufficient_scope", id="v1-no-scope"
        ),
        pytest.param("service_orders", (), V2, "insufficient_scope", id="v2-no-scope"),
        pytest.param("orders:read", (), V1, "insufficient_scope", id="scope-before-feature"),
        pytest.param("service_orders", (), V1, "feature_disabled", id="v1-feature-off"),
        pytest.param("service_orders", (), V1 + "/1", "feature_disabled", id="v1-get-feature-off"),
    ],
)
async def test_a_key_without_the_scope_or_feature_is_a_403(
    loaded, client, make_key, scopes, features, path, code
):
    headers = await make_key(f"t403-{code}-{len(features)}", scopes, features)

    response = await client.get(path, headers=headers)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == code


async def test_the_orders_dialect_needs_no_feature(loaded, client, make_key):
    headers = await make_key("nofeature", "orders:read", ())

    assert (await client.get(V2, headers=headers)).status_code == 200


@pytest.mark.parametrize(
    ("missing", "foreign"),
    [
        pytest.param(V1 + "/99999", V1 + "/40", id="service-orders"),
        pytest.param(V2 + "/ord_99999", V2 + "/ord_40", id="orders"),
    ],
)
async def test_another_tenants_order_is_a_404_exactly_like_a_missing_one(
    loaded, client, globex, missing, foreign
):
    assert 40 in {s.id for s in loaded["acme"]} and 40 not in {s.id for s in loaded["globex"]}
    rid = {"X-Request-ID": "same"}

    a = await client.get(missing, headers=globex | rid)
    b = await client.get(foreign, headers=globex | rid)

    assert a.status_code == b.status_code == 404
    assert a.json() == b.json()
    assert a.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        pytest.param("abc-123_X.y", True, id="well-formed"),
        pytest.param("a" * 128, True, id="128-chars"),
        pytest.param("a" * 129, False, id="too-long"),
        pytest.param("has space", False, id="space"),
        pytest.param("semi;colon", False, id="punctuation"),
        pytest.param("", False, id="empty"),
    ],
)
@pytest.mark.parametrize("path", [V1, V2, V1 + "/99999", "/nowhere", V1 + "?limit=0"])
async def test_the_request_id_is_echoed_or_made(loaded, client, acme, sent, kept, path):
    response = await client.get(path, headers=acme | {"X-Request-ID": sent})

    rid = response.headers["x-request-id"]
    if kept:
        assert rid == sent
    else:
        assert rid.startswith("req_") and len(rid) > 8
    body = response.json()
    if "meta" in body:
        assert body["meta"]["request_id"] == rid


async def test_an_unknown_path_and_a_write_method_answer_in_the_dialects_shape(client, acme):
    assert (await client.get("/v1/nothing", headers=acme)).json()["success"] is False
    response = await client.post(V1, headers=acme)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", [V1, V1 + "/1", V2, V2 + "/ord_1"])
async def test_a_405_says_which_methods_are_allowed(client, acme, method, path):
    response = await client.request(method, path, headers=acme)

    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} == {"GET", "OPTIONS"}
