"""The direct ASGI path (`services/api/direct.py`) answers exactly as Litestar does: same status,
headers and body bytes for the same request, errors and foreign tenants included; what it does not
serve reaches Litestar."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx
import pytest

from services.api.edge import Edge

V1 = "/api/v1/service-orders"
V2 = "/v1/orders"
RID = {"X-Request-ID": "agree-1"}
HOSTILE = ["' OR 1=1 --", "a\x00b", "%", "ÅÄÖ 李雷 🚀", "x" * 2000, "..", "ord_1 OR 1=1", "-1"]


class Recorder:
    """An ASGI app in front of Litestar that notes which paths reached it."""

    def __init__(self, app) -> None:
        self.app, self.paths = app, []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
async def recorder(app) -> Recorder:
    return Recorder(app.app)


async def _client(edge: Edge) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=edge)
    async with httpx.AsyncClient(transport=transport, base_url="http://orderview.test") as c:
        yield c


@pytest.fixture(scope="module")
async def direct(app, recorder) -> AsyncIterator[httpx.AsyncClient]:
    """The application as served: the direct path in front of Litestar (recorded)."""
    async for c in _client(Edge(recorder, app.drain, app.direct)):
        yield c


@pytest.fixture(scope="module")
async def litestar(app) -> AsyncIterator[httpx.AsyncClient]:
    """The same application with every request going through Litestar."""
    async for c in _client(Edge(app.app, app.drain)):
        yield c


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


async def test_every_api_request_gets_the_same_status_headers_and_body_from_both_paths(
    loaded, direct, litestar, recorder, keys
):
    cursors = await _cursors(litestar, keys["acme"])
    requests = _requests(cursors)
    statuses = set()
    recorder.paths.clear()

    for key, path in requests:
        a = await direct.get(path, headers=keys[key] | RID)
        b = await litestar.get(path, headers=keys[key] | RID)

        assert (a.status_code, a.headers.raw, a.content) == (
            b.status_code,
            b.headers.raw,
            b.content,
        ), (key, path)
        statuses.add(a.status_code)

    assert statuses == {200, 400, 401, 403, 404}
    assert recorder.paths == [], "the direct path left these to Litestar"


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
    loaded, direct, litestar, acme, headers, path
):
    a = await direct.get(path, headers=acme | headers)
    b = await litestar.get(path, headers=acme | headers)

    rid_a, rid_b = a.headers["x-request-id"], b.headers["x-request-id"]
    if headers.get("X-Request-ID", "").startswith("a"):
        assert rid_a == rid_b == headers["X-Request-ID"]
    else:
        assert rid_a.startswith("req_") and rid_b.startswith("req_") and rid_a != rid_b
    assert a.content.replace(rid_a.encode(), b"RID") == b.content.replace(rid_b.encode(), b"RID")
    assert [h for h in a.headers.raw if h[0] != b"x-request-id"] == [
        h for h in b.headers.raw if h[0] != b"x-request-id"
    ]


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        pytest.param("HEAD", f"{V1}/1", {}, id="head"),
        pytest.param("POST", V1, {}, id="post"),
        pytest.param("GET", f"{V1}/", {}, id="trailing-slash"),
        pytest.param("GET", f"{V1}/1/", {}, id="get-trailing-slash"),
        pytest.param("GET", f"{V1}//1", {}, id="double-slash"),
        pytest.param("GET", f"{V1}/1/items", {}, id="below-an-order"),
        pytest.param("GET", f"{V2}/ord_1", {"Host": "bad host"}, id="invalid-host"),
        pytest.param("GET", "/health/live", {}, id="operations"),
    ],
)
async def test_what_the_direct_path_does_not_serve_reaches_litestar_unchanged(
    loaded, direct, litestar, recorder, acme, method, path, headers
):
    recorder.paths.clear()

    a = await direct.request(method, path, headers=acme | RID | headers)
    b = await litestar.request(method, path, headers=acme | RID | headers)

    assert recorder.paths, "the direct path answered it"
    assert (a.status_code, a.headers.raw, a.content) == (b.status_code, b.headers.raw, b.content)


async def test_requests_of_the_direct_path_are_counted_by_route_and_status(
    loaded, direct, client, acme
):
    await direct.get(f"{V1}/1", headers=acme)
    await direct.get(f"{V1}/abc", headers=acme)
    await direct.get(f"{V2}/ord_99999", headers=acme)

    text = (await client.get("/metrics")).text

    route = 'route="/api/v1/service-orders/{order_id}"'
    assert f'orderview_api_requests_total{{method="GET",{route},status="200"}}' in text
    assert f'orderview_api_requests_total{{method="GET",{route},status="400"}}' in text
    route = 'route="/v1/orders/{order_id}"'
    assert f'orderview_api_requests_total{{method="GET",{route},status="404"}}' in text
    assert f'orderview_api_request_seconds_count{{{route},status="404"}}' in text
