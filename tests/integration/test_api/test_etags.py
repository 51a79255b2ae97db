"""ETags and 304s on the four endpoints of both dialects (api.md, "Freshness and conditional
requests"): the tag follows the body, not the request id; a 304 only where the answer is a 200."""

from __future__ import annotations

import json

import pytest

from tests.support import project

TENANT = "etagco"
V1, V2 = "/api/v1/service-orders", "/v1/orders"
ENDPOINTS = [
    pytest.param(f"{V1}/501?include=items,participant", id="service order"),
    pytest.param(f"{V1}?limit=1&include=participant", id="service orders"),
    pytest.param(f"{V2}/ord_501", id="order"),
    pytest.param(f"{V2}?limit=1", id="orders"),
]


def _event(type_: str, aggregate: int, seq: int, data: dict, at: str) -> str:
    return json.dumps({
        "id": f"{type_}-{aggregate}-{seq}", "type": type_, "tenant": TENANT,
        "aggregate_id": aggregate, "seq": seq, "at": at, "data": data,
    })  # fmt: skip


@pytest.fixture(scope="module")
async def history(rclient, api_settings):
    """Order 501 of participant 9 (newest), order 500 behind it; both projected."""
    item = {"id": 1, "name": "Lesson", "quantity": 1, "unit_price": "40.00"}
    await project(rclient, api_settings, [
        _event("participant.upserted", 9, 1, {"name": "Ada", "email": "ada@x.test"},
               "2024-03-01T08:00:00Z"),
        _event("order.created", 500, 1, {"type": "sale", "currency": "EUR"},
               "2024-03-01T09:00:00Z"),
        _event("order.created", 501, 1, {"type": "booking", "currency": "EUR",
                                          "participant_id": 9, "items": [item]},
               "2024-03-02T09:00:00Z"),
    ])  # fmt: skip


@pytest.fixture(scope="module")
async def key(make_key, history):
    return await make_key(TENANT, "service_orders,orders:read")


async def _tag(client, path, key) -> str:
    response = await client.get(path, headers=key)
    assert response.status_code == 200, response.text
    return response.headers["etag"]


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_a_200_carries_a_weak_private_etag_that_ignores_the_request_id(client, key, path):
    first = await client.get(path, headers=key | {"X-Request-ID": "first"})
    second = await client.get(path, headers=key | {"X-Request-ID": "second"})

    assert first.status_code == second.status_code == 200
    assert first.headers["etag"].startswith('W/"') and first.headers["etag"].endswith('"')
    assert first.headers["etag"] == second.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_if_none_match_with_the_tag_is_a_304_without_a_body(client, key, path):
    tag = await _tag(client, path, key)

    response = await client.get(
        path, headers=key | {"If-None-Match": tag, "X-Request-ID": "again-1"}
    )

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["etag"] == tag
    assert response.headers["x-request-id"] == "again-1"
    assert response.headers["cache-control"] == "private, no-cache"


@pytest.mark.parametrize(
    ("header", "status"),
    [
        pytest.param("*", 304, id="star"),
        pytest.param('W/"nope", {tag}', 304, id="a list holding the tag"),
        pytest.param("{strong}", 304, id="the tag without W/ (weak comparison)"),
        pytest.param('W/"nope", "other"', 200, id="a list without it"),
        pytest.param("{tag} trailing", 200, id="malformed"),
    ],
)
@pytest.mark.parametrize("path", ENDPOINTS)
async def test_if_none_match_star_lists_and_weak_comparison(client, key, path, header, status):
    tag = await _tag(client, path, key)
    header = header.format(tag=tag, strong=tag.removeprefix("W/"))

    response = await client.get(path, headers=key | {"If-None-Match": header})

    assert response.status_code == status
    assert response.headers["etag"] == tag


async def test_include_changes_the_tag_of_a_service_order(client, key):
    assert await _tag(client, f"{V1}/501", key) != await _tag(
        client, f"{V1}/501?include=items", key
    )


async def test_a_change_to_the_order_changes_the_tag_and_the_old_tag_gets_the_new_body(
    client, key, rclient, api_settings
):
    before = {p.values[0]: await _tag(client, p.values[0], key) for p in ENDPOINTS}

    await project(rclient, api_settings, [
        _event("order.payment_status_changed", 501, 2, {"payment_status": "paid"},
               "2024-03-03T09:00:00Z"),
    ])  # fmt: skip

    for path, tag in before.items():
        response = await client.get(path, headers=key | {"If-None-Match": tag})
        assert response.status_code == 200, path
        assert response.headers["etag"] != tag, path
        assert "2024-03-03T09:00:00" in response.text, path  # updated_at


async def test_a_participant_rename_changes_the_tag_of_the_orders_that_show_it(
    client, key, rclient, api_settings
):
    # The order's own version does not move; the body does (the participant's name in it).
    paths = [f"{V1}/501?include=participant", f"{V2}/ord_501", f"{V2}?limit=1"]
    before = {path: await _tag(client, path, key) for path in paths}

    await project(rclient, api_settings, [
        _event("participant.upserted", 9, 2, {"name": "Ada L.", "email": "ada@x.test"},
               "2024-03-04T09:00:00Z"),
    ])  # fmt: skip

    for path, tag in before.items():
        response = await client.get(path, headers=key | {"If-None-Match": tag})
        assert response.status_code == 200 and "Ada L." in response.text, path


async def test_an_order_past_the_end_of_a_page_changes_its_tag_through_has_more(
    client, key, rclient, api_settings
):
    # The page's orders stay the same; has_more and the cursor change, and so does the tag.
    paths = [f"{V1}?limit=2", f"{V2}?limit=2"]
    before = {path: await _tag(client, path, key) for path in paths}

    await project(rclient, api_settings, [
        _event("order.created", 499, 1, {"type": "sale", "currency": "EUR"},
               "2024-02-01T09:00:00Z"),
    ])  # fmt: skip

    for path, tag in before.items():
        response = await client.get(path, headers=key | {"If-None-Match": tag})
        assert response.status_code == 200, path
        assert response.headers["etag"] != tag, path
        assert "499" not in json.dumps([o["id"] for o in response.json()["data"]]), path


@pytest.mark.parametrize(
    ("who", "path", "status"),
    [
        pytest.param("nobody", f"{V2}/ord_501", 401, id="no key"),
        pytest.param("revoked", f"{V2}/ord_501", 401, id="unknown key"),
        pytest.param("v2-only", f"{V1}/501", 403, id="insufficient scope"),
        pytest.param("no-feature", f"{V1}/501", 403, id="feature disabled"),
        pytest.param("other-tenant", f"{V2}/ord_501", 404, id="another tenant's order"),
        pytest.param("owner", f"{V2}/ord_999", 404, id="no such order"),
        pytest.param("owner", f"{V2}?limit=0", 400, id="bad parameter"),
    ],
)
async def test_a_304_is_never_given_where_the_answer_would_not_be_a_200(
    client, key, make_key, who, path, status
):
    keys = {
        "nobody": {},
        "revoked": {"Authorization": "Bearer ovk_not-a-key"},
        "v2-only": await make_key(TENANT, "orders:read"),
        "no-feature": await make_key("etagco-nofeature", "service_orders", features=()),
        "other-tenant": await make_key("etagco-other", "orders:read"),
        "owner": key,
    }
    tag = await _tag(client, f"{V2}/ord_501", key)

    for header in ("*", tag):
        response = await client.get(path, headers=keys[who] | {"If-None-Match": header})
        assert response.status_code == status, (header, response.text)
        assert "etag" not in response.headers
        assert response.content  # the dialect's error body


async def test_the_openapi_schema_documents_if_none_match_and_the_304(client):
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    for path in (V1, f"{V1}/{{order_id}}", V2, f"{V2}/{{order_id}}"):
        operation = paths[path]["get"]
        assert "304" in operation["responses"], path
        assert {"name": "If-None-Match", "in": "header"}.items() <= next(
            p for p in operation["parameters"] if p["name"] == "If-None-Match"
        ).items(), path
