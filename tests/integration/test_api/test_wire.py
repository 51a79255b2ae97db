"""What every API response carries on the wire, for a catalogue of requests (both dialects, every
access outcome, hostile values in every place): exactly the headers content-type, content-length and
X-Request-ID (after WWW-Authenticate on a 401; after ETag and Cache-Control on a 200), and a body in
the dialect's shape.

(Until the API had one path, this module compared a direct ASGI path with Litestar's byte for
byte; the catalogue is the same. The one path's bytes were compared with that older path's bytes,
request by request, when it replaced it: identical.)
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

V1 = "/api/v1/service-orders"
V2 = "/v1/orders"
RID = {"X-Request-ID": "agree-1"}
HOSTILE = ["' OR 1=1 --", "a\x00b", "%", "ÅÄÖ 李雷 🚀", "x" * 2000, "..", "ord_1 OR 1=1", "-1"]


@pytest.fixture(scope="module")
async def keys(make_key, acme, globex) -> dict[str, dict[str, str]]:
    return {
        "acme": acme,
        "globex": globex,
        "v1-only": await make_key("acme", "service_orders"),
        "v2-only": await make_key("acme", "orders:read"),
        "no-feature": await make_key("direct-nofeature", "service_orders,orders:read", ()),
        "none": {},
        "unknown": {"Authorization": "Bearer ovk_unknown"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    }


async def _cursors(client, headers) -> dict[str, str]:
    v1 = (await client.get(V1, params={"limit": 3, "sort": "total"}, headers=headers)).json()
    v2 = (await client.get(V2, params={"limit": 3}, headers=headers)).json()
    return {"v1": v1["meta"]["pagination"]["next_cursor"], "v2": v2["pagination"]["nextCursor"]}


def _requests(cursors: dict[str, str]) -> list[tuple[str, str]]:
    """(key name, path and query) of every request compared."""
    v1, v2 = cursors["v1"], cursors["v2"]
    paths = [
        V1, f"{V1}?limit=5", f"{V1}?include=items,participant&limit=100",
        f"{V1}?status=confirmed,pending&sort=total&order=asc&limit=7",
        f"{V1}?sort=order_number&order=DESC", f"{V1}?sort=submitted_at&order=asc",
        f"{V1}?event_key=expo&participant_id=2", f"{V1}?order_number=SO-1",
        f"{V1}?limit=3&sort=total&cursor={v1}", f"{V1}?limit=4&sort=total&cursor={v1}",
        f"{V1}?limit=3&cursor={v1}", f"{V1}?cursor={v2}", f"{V1}?limit=0", f"{V1}?limit=5&limit=6",
        f"{V1}?sort=bogus", f"{V1}?include=bogus", f"{V1}?unknown=1&limit=2", f"{V1}?status=",
        f"{V1}?order=de%C5%BFc",
        f"{V1}/1", f"{V1}/40", f"{V1}/99999", f"{V1}/1?include=items", f"{V1}/2?include=participant",
        f"{V1}/1?include=items,participant&extra=x", f"{V1}/1?include=bogus", f"{V1}/abc",
        f"{V1}/1.5", f"{V1}/99999999999999999999", f"{V1}/-1", f"{V1}/%20",
        f"{V1}?limit=3&sort=total&cursor={v1}=", f"{V2}?limit=3&cursor=.{v2}",
        V2, f"{V2}?limit=5", f"{V2}?status=confirmed&type=booking", f"{V2}?customerId=cust_2",
        f"{V2}?locationId=loc_a&startDate=2024-01-02&endDate=2024-01-03",
        f"{V2}?createdAfter=2024-01-01T00:30:00Z", f"{V2}?limit=3&cursor={v2}", f"{V2}?cursor={v1}",
        f"{V2}?status=bogus", f"{V2}?limit=1000", f"{V2}?unknown=x", f"{V2}?customerId=7",
        f"{V2}?startDate=9999-12-31T23:59:59-01:00",
        f"{V2}/ord_1", f"{V2}/ord_40", f"{V2}/ord_99999", f"{V2}/ord_1?limit=bogus", f"{V2}/42",
        f"{V2}/ord_x", f"{V2}/ord_99999999999999999999",
    ]  # fmt: skip
    in_path = [h for h in HOSTILE if h != ".."]  # a client resolves it to the parent path
    paths += [f"{V1}/{quote(h)}" for h in in_path] + [f"{V2}/{quote(h)}" for h in in_path]
    paths += [f"{V1}?{p}={quote(h)}" for h in HOSTILE for p in ("sort", "cursor", "include")]
    paths += [f"{V2}?{p}={quote(h)}" for h in HOSTILE for p in ("status", "startDate")]
    requests = [(key, path) for key in ("acme", "globex") for path in paths]
    denied = [V1, f"{V1}/1", f"{V1}/abc?limit=0", V2, f"{V2}/ord_1", f"{V2}/x?limit=0"]
    others = ("v1-only", "v2-only", "no-feature", "none", "unknown", "basic")
    return requests + [(key, path) for key in others for path in denied]


def _check_shape(path: str, status: int, body: dict) -> None:
    """The body of `status` in the shape of the dialect of `path`."""
    if path.startswith(V2):
        if status == 200:
            assert "data" in body and ("pagination" in body or "success" in body)
        else:
            assert body["success"] is False and set(body["error"]) == {"code", "message"}
    elif status == 200:
        assert "data" in body and "meta" in body
    else:
        assert set(body["error"]) == {"code", "message", "parameter"}
        assert body["meta"] == {"request_id": RID["X-Request-ID"]}


async def test_every_api_response_has_exactly_its_headers_and_the_dialects_shape(
    loaded, client, keys
):
    cursors = await _cursors(client, keys["acme"])
    statuses = set()

    for key, path in _requests(cursors):
        response = await client.get(path, headers=keys[key] | RID)

        status, body = response.status_code, response.content
        challenge = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        if status == 200:
            tag = response.headers["etag"].encode()
            challenge = [(b"etag", tag), (b"cache-control", b"private, no-cache")]
        assert response.headers.raw == [
            *challenge,
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
            (b"x-request-id", b"agree-1"),
        ], (key, path)
        _check_shape(path, status, json.loads(body))
        statuses.add(status)

    assert statuses == {200, 400, 401, 403, 404}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-request-id"),
        pytest.param({"X-Request-ID": "has space"}, id="malformed-request-id"),
        pytest.param({"X-Request-ID": "a" * 128}, id="128-chars"),
    ],
)
@pytest.mark.parametrize("path", [V1, f"{V1}/1", f"{V1}/99999", f"{V1}?limit=0", f"{V2}/ord_1"])
async def test_a_made_request_id_is_in_the_header_and_body_alike(
    loaded, client, acme, headers, path
):
    a = await client.get(path, headers=acme | headers)
    b = await client.get(path, headers=acme | headers)

    rid_a, rid_b = a.headers["x-request-id"], b.headers["x-request-id"]
    if headers.get("X-Request-ID", "").startswith("a"):
        assert rid_a == rid_b == headers["X-Request-ID"]
    else:
        assert rid_a.startswith("req_") and rid_b.startswith("req_") and rid_a != rid_b
    assert a.content.replace(rid_a.encode(), b"RID") == b.content.replace(rid_b.encode(), b"RID")
    if path.startswith(V1) and a.status_code != 200:
        assert a.json()["meta"]["request_id"] == rid_a


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        pytest.param("HEAD", f"{V1}/1", {}, 405, id="head"),
        pytest.param("POST", V1, {}, 405, id="post"),
        pytest.param("GET", f"{V1}/", {}, 200, id="trailing-slash"),
        pytest.param("GET", f"{V1}/1/", {}, 200, id="get-trailing-slash"),
        pytest.param("GET", f"{V1}//1", {}, 200, id="double-slash"),
        pytest.param("GET", f"{V1}/1/items", {}, 404, id="below-an-order"),
        pytest.param("GET", f"{V2}/ord_1", {"Host": "bad host"}, 400, id="invalid-host"),
        pytest.param("GET", "/health/live", {}, 200, id="operations"),
    ],
)
async def test_other_methods_paths_and_hosts_answer_with_the_request_id(
    loaded, client, acme, method, path, headers, status
):
    response = await client.request(method, path, headers=acme | RID | headers)

    assert response.status_code == status
    assert response.headers.raw[-1] == (b"x-request-id", b"agree-1")
    if status == 405:
        assert response.headers["allow"] == "GET, OPTIONS"
    if status >= 400 and method != "HEAD":
        _check_shape(path, status, response.json())


async def test_api_requests_are_counted_by_route_template_and_status(loaded, client, acme):
    await client.get(f"{V1}/1", headers=acme)
    await client.get(f"{V1}/abc", headers=acme)
    await client.get(f"{V2}/ord_99999", headers=acme)

    text = (await client.get("/metrics")).text

    route = 'route="/api/v1/service-orders/{order_id}"'
    assert f'orderview_api_requests_total{{method="GET",{route},status="200"}}' in text
    assert f'orderview_api_requests_total{{method="GET",{route},status="400"}}' in text
    route = 'route="/v1/orders/{order_id}"'
    assert f'orderview_api_requests_total{{method="GET",{route},status="404"}}' in text
    assert f'orderview_api_request_seconds_count{{{route},status="404"}}' in text
