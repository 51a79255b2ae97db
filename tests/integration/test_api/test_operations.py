"""Health, readiness, metrics and the OpenAPI schema of the application."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest

from orderview.settings import load_settings
from services.api.app import create_app
from tests.chaos import ApiProcess
from tests.integration.test_api.conftest import api_env


async def test_liveness_and_readiness_answer_200_with_postgresql_up(loaded, client):
    assert (await client.get("/health/live")).status_code == 200
    assert (await client.get("/health/ready")).status_code == 200


async def test_an_unreachable_postgresql_is_503_not_500(database_url, redis_url):
    env = api_env(database_url, redis_url)
    env["ORDERVIEW_READ_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:1/nowhere"
    edge = create_app(load_settings(env))
    started, stop = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with edge.app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(run())
    await started.wait()
    try:
        transport = httpx.ASGITransport(app=edge)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/health/live")).status_code == 200
            assert (await c.get("/health/ready")).status_code == 503
            headers = {"Authorization": "Bearer ovk_whatever"}
            response = await c.get("/api/v1/service-orders", headers=headers)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "unavailable"
            response = await c.get("/v1/orders", headers=headers)
            assert response.json() == {
                "success": False,
                "error": {"code": "unavailable", "message": "the database cannot be reached"},
            }
    finally:
        stop.set()
        await task


async def test_metrics_count_requests_by_route_and_status_and_show_pool_and_lag(
    loaded, client, acme, api_settings
):
    await client.get("/v1/orders", headers=acme)
    await client.get("/v1/orders?limit=0", headers=acme)

    text = (await client.get("/metrics")).text

    assert 'orderview_api_requests_total{method="GET",route="/v1/orders",status="200"}' in text
    assert 'orderview_api_requests_total{method="GET",route="/v1/orders",status="400"}' in text
    assert (
        'orderview_api_request_seconds_bucket{le="0.005",route="/v1/orders",status="200"}' in text
    )
    assert 'orderview_api_pool_connections{state="in_use"}' in text
    stream = api_settings.streams[0]
    assert f'orderview_stream_lag{{stream="{stream}"}} 0.0' in text
    assert "orderview_api_redis_up 1.0" in text


async def test_metrics_are_served_as_prometheus_text_with_a_well_formed_content_type(client):
    response = await client.get("/metrics")

    media_type, *parameters = [p.strip() for p in response.headers["content-type"].split(";")]
    names = [p.partition("=")[0].lower() for p in parameters]
    assert media_type == "text/plain"
    assert sorted(names) == ["charset", "version"]  # each once: a scraper refuses duplicates
    assert "# TYPE orderview_api_requests_total counter" in response.text


async def test_the_openapi_schema_documents_both_dialects_parameters_errors_and_bearer(client):
    schema = (await client.get("/schema/openapi.json")).json()

    paths = schema["paths"]
    v1 = paths["/api/v1/service-orders"]["get"]
    v2 = paths["/v1/orders"]["get"]
    assert {p["name"] for p in v1["parameters"]} >= {
        "event_key", "status", "participant_id", "order_number", "sort", "order", "include",
        "limit", "cursor",
    }  # fmt: skip
    assert {p["name"] for p in v2["parameters"]} >= {
        "limit", "cursor", "status", "type", "customerId", "locationId", "startDate", "endDate",
        "createdAfter",
    }  # fmt: skip
    assert {"400", "401", "403", "404"} <= set(v1["responses"]) & set(v2["responses"])
    assert v1["security"] == [{"bearer": []}]
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "/api/v1/service-orders/{order_id}" in paths and "/v1/orders/{order_id}" in paths


class _Links(HTMLParser):
    """Every URL a page makes the browser load: src and href attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_docs_page_loads_only_same_origin_assets_that_answer_200(client, page):
    response = await client.get(page)
    assert response.status_code == 200 and "<html" in response.text.lower()
    links = _Links()
    links.feed(response.text)
    assert len(links.urls) >= 3, links.urls  # the bundle, the preset and the stylesheet
    for url in links.urls:
        assert urlsplit(url).netloc == "" and url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
        # Styles must not pull fonts or images from elsewhere either.
        for ref in re.findall(r"url\(([^)]*)\)", asset.text if url.endswith(".css") else ""):
            assert not re.match(r"['\"]?(https?:)?//", ref), (url, ref)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
async def test_the_docs_page_renders_every_endpoint_in_a_browser_without_internet(
    database_url, redis_url, tmp_path
):
    # What a person sees: headless Chromium with background networking off loads /schema from a
    # real `orderview api`; Swagger UI must draw the operations (an old bundle that cannot read
    # OpenAPI 3.1 draws "Unable to render this definition" instead).
    api = ApiProcess({**os.environ, **api_env(database_url, redis_url)})
    try:
        await api.ready()
        dom = await asyncio.to_thread(
            subprocess.run,
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path}", "--virtual-time-budget=5000",
             "--dump-dom", f"{api.base}/schema"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        api.stop()
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom.stdout))
    assert paths >= {"/api/v1/service-orders", "/api/v1/service-orders/{order_id}",
                     "/v1/orders", "/v1/orders/{order_id}"}, dom.stdout[-2000:]  # fmt: skip
    assert "Unable to render" not in dom.stdout
