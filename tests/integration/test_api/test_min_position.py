"""`X-Min-Position` through the API: read your writes, the timeout, malformed headers, access first."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import projector
from tests.writes import order_created, xadd

HEADER = "X-Min-Position"
_ids = itertools.count(10_000)


def reads(order_id: int) -> list[tuple[str, dict]]:
    """A request of each endpoint that shows order `order_id` once it is applied."""
    return [
        (f"/api/v1/service-orders/{order_id}", {}),
        (f"/v1/orders/ord_{order_id}", {}),
        ("/api/v1/service-orders", {"order_number": f"RYW-{order_id}"}),
        ("/v1/orders", {"locationId": f"loc_ryw_{order_id}"}),
    ]


def shows(body: dict, order_id: int) -> bool:
    data = body["data"]
    ids = [o["id"] for o in data] if isinstance(data, list) else [data["id"]]
    return order_id in ids or f"ord_{order_id}" in ids


def error_of(response) -> tuple[str, str, str | None]:
    """(code, message, parameter) of either dialect's error body."""
    error = response.json()["error"]
    return error["code"], error["message"], error.get("parameter")


async def test_a_write_read_at_once_with_its_position_always_shows(
    loaded, client, acme, rclient, api_settings
):
    stream = api_settings.streams[0]
    async with projector(api_settings):
        for round_ in range(60):
            order_id = next(_ids)
            position = await xadd(rclient, stream, order_created("acme", order_id))
            path, params = reads(order_id)[round_ % 4]
            headers = {**acme, HEADER: f"{stream}@{position}"}
            response = await client.get(path, params=params, headers=headers)
            assert response.status_code == 200, (path, response.text)
            assert shows(response.json(), order_id), (round_, path, response.text)


async def test_an_unreached_position_is_503_with_retry_after(
    loaded, client, acme, rclient, api_settings
):
    stream = api_settings.streams[0]
    order_id = next(_ids)
    position = await xadd(rclient, stream, order_created("acme", order_id))  # no projector runs
    for path, params in reads(order_id):
        headers = {**acme, HEADER: f"{stream}@{position}"}
        response = await client.get(path, params=params, headers=headers)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "1"
        code, message, _ = error_of(response)
        assert code == "position_not_reached" and HEADER in message
        assert response.headers["x-request-id"]
    async with projector(api_settings):  # and once applied, the same request answers
        response = await client.get(reads(order_id)[0][0], headers=headers)
        assert response.status_code == 200 and shows(response.json(), order_id)


MALFORMED = [
    "orders:events",  # no @
    "{stream}@",  # empty id
    "{stream}@1-x",  # not an entry id
    "{stream}@1",
    "unknown:stream@1-0",  # a stream the service does not read
    ",".join(["{stream}@1-0"] * 33),  # too many
    "{stream} @1-0",  # whitespace inside
    "{stream}@1-0,",  # an empty element
    "",
]


@pytest.mark.parametrize("value", MALFORMED)
async def test_a_malformed_header_is_400_naming_it_in_both_dialects(
    loaded, client, acme, api_settings, value
):
    value = value.format(stream=api_settings.streams[0])
    for path, params in reads(1):
        response = await client.get(path, params=params, headers={**acme, HEADER: value})
        assert response.status_code == 400, (path, response.text)
        code, message, parameter = error_of(response)
        assert code == "invalid_parameter" and HEADER in message
        if path.startswith("/api/"):
            assert parameter == HEADER


async def test_access_checks_come_before_the_header(
    loaded, client, make_key, rclient, api_settings
):
    stream = api_settings.streams[0]
    unreached = f"{stream}@{await xadd(rclient, stream, order_created('acme', next(_ids)))}"
    no_scope = await make_key("acme", "orders:read")
    no_feature = await make_key("feature-off", "service_orders,orders:read", features=())
    cases = [
        ({}, "/v1/orders", 401),
        ({"Authorization": "Bearer ovk_nope"}, "/api/v1/service-orders/1", 401),
        (no_scope, "/api/v1/service-orders", 403),
        (no_feature, "/api/v1/service-orders/1", 403),
    ]
    for headers, path, status in cases:
        for value in ("malformed", unreached):
            response = await client.get(path, headers={**headers, HEADER: value})
            assert response.status_code == status, (path, value, response.text)


async def test_a_satisfied_header_changes_nothing_in_the_answer(loaded, client, acme, api_settings):
    stream = api_settings.streams[0]
    for path, params in [*reads(1), ("/api/v1/service-orders/999999", {})]:
        plain = await client.get(path, params=params, headers={**acme, "X-Request-ID": "same"})
        headers = {**acme, "X-Request-ID": "same", HEADER: f"{stream}@1-0, {stream}@0-1"}
        fresh = await client.get(path, params=params, headers=headers)
        assert (fresh.status_code, fresh.content) == (plain.status_code, plain.content)


_HEADER_BYTES = st.binary(max_size=120).filter(lambda b: not set(b) & set(b"\r\n\x00"))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(_HEADER_BYTES, st.from_regex(r"[ -~]{0,80}", fullmatch=True)))
async def test_fuzzed_headers_never_answer_500(loaded, client, acme, api_settings, value):
    if isinstance(value, str):  # printable ASCII, half of the time around the real stream key
        value = (
            (api_settings.streams[0] + "@" + value).encode() if len(value) % 2 else value.encode()
        )
    for path in ("/api/v1/service-orders", "/v1/orders/ord_1"):
        response = await client.get(path, headers=[*acme.items(), (HEADER.encode(), value)])
        assert response.status_code in (200, 400, 404, 503), (value, response.text)


async def test_the_schema_documents_the_header_on_the_four_endpoints(client):
    schema = (await client.get("/schema/openapi.json")).json()
    paths = ["/api/v1/service-orders", "/v1/orders"]
    for path in [*paths, *(p + "/{order_id}" for p in paths)]:
        parameters = schema["paths"][path]["get"]["parameters"]
        assert any(p["name"] == HEADER and p["in"] == "header" for p in parameters), path
