"""API fuzz: schemathesis generates requests for every operation of `/schema/openapi.json`, valid and
invalid, against a real `orderview api` process with a valid key and projected orders. No answer
may be a 5xx, and every answer must match the schema (status code, content type, headers, body).

    .venv/bin/pytest tests/reliability/test_api_fuzz.py -s                  # 25 valid + 25 invalid cases an operation
    ORDERVIEW_LONG=1 .venv/bin/pytest tests/reliability/test_api_fuzz.py -s # 300 + 300 an operation (>= 2 000)
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import Iterator

import asyncpg
import pytest
import redis.asyncio as redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from orderview.settings import load_settings
from services.api.keys import create_key, set_feature
from services.histories import varied
from tests.chaos import LONG, ApiProcess, scale
from tests.conftest import RUN_ID
from tests.support import project

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CASES: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()


class Fuzzed:
    def __init__(self, api: ApiProcess, key: str):
        self.api, self.key = api, key


@pytest.fixture(scope="module")
def fuzzed(database_url, redis_url) -> Iterator[Fuzzed]:
    """Orders of tenant `tenant-0` projected, a key of both scopes, and a running API."""
    env = {"ORDERVIEW_DATABASE_URL": database_url, "ORDERVIEW_REDIS_URL": redis_url,
           "ORDERVIEW_STREAMS": f"ovtest:{RUN_ID}:fuzz:orders:events", "ORDERVIEW_BLOCK_MS": "100",
           "ORDERVIEW_CURSOR_SECRET": "test-cursor-secret-0123456789",
           "ORDERVIEW_METRICS_PORT": "0", "ORDERVIEW_LOG_LEVEL": "ERROR"}  # fmt: skip

    async def load() -> str:
        events = varied(13, tenants=("fuzz",), orders=60).events
        client = redis.from_url(redis_url)
        conn = await asyncpg.connect(database_url)
        try:
            await project(client, load_settings(env), [json.dumps(e) for e in events])
            _, key = await create_key(conn, "fuzz", ["service_orders", "orders:read"])
            await set_feature(conn, "fuzz", "service_orders", True)
            return key
        finally:
            await client.aclose()
            await conn.close()

    key = asyncio.run(load())
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ORDERVIEW_")}
    api = ApiProcess(clean | env)
    try:
        asyncio.run(api.ready())
        yield Fuzzed(api, key)
    finally:
        logs = api.logs()
        code = api.stop()
        print(
            f"\nAPI fuzz ({'long' if LONG else 'short'}): {sum(CASES.values())} cases over "
            f"{len(CASES)} operations x modes {dict(CASES)}; statuses {dict(sorted(STATUSES.items()))}"
        )
        assert code == 0, logs


@pytest.fixture(scope="module")
def api_schema(fuzzed: Fuzzed):
    """The schema as the running process serves it."""
    return schemathesis.openapi.from_url(f"{fuzzed.api.base}/schema/openapi.json")


OPERATIONS = [
    "/api/v1/service-orders",
    "/api/v1/service-orders/{order_id}",
    "/v1/orders",
    "/v1/orders/{order_id}",
    "/health/live",
    "/health/ready",
    "/metrics",
]


def test_the_fuzzed_operations_are_every_operation_of_the_schema(api_schema):
    served = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert served == {("GET", path) for path in OPERATIONS}


def test_money_and_rates_are_documented_as_the_numbers_they_are_served_as(api_schema):
    schemas = api_schema.raw_schema["components"]["schemas"]
    money = {"Order": ["subtotal", "tax", "total"], "OrderService": ["price"],
             "ServiceOrder": ["subtotal", "tax_total", "total"],
             "ServiceOrderItem": ["unit_price", "tax_rate", "subtotal", "tax", "total"]}  # fmt: skip
    types = {(c, f): schemas[c]["properties"][f].get("type") for c, fs in money.items() for f in fs}
    assert set(types.values()) == {"number"}, types


# Operations without parameters have no invalid input to generate.
FUZZED = [(p, m) for p in OPERATIONS for m in GenerationMode if m.value != "negative" or "{" in p or p.endswith("orders")]  # fmt: skip


@pytest.mark.parametrize(("path", "mode"), FUZZED)
def test_every_operation_answers_without_5xx_and_as_its_schema_says(api_schema, fuzzed, path, mode):
    operation = api_schema[path]["GET"]
    headers = {"Authorization": f"Bearer {fuzzed.key}"}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=scale(25, 300), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def answers(case) -> None:
        response = case.call_and_validate(base_url=fuzzed.api.base, headers=headers, checks=CHECKS)
        CASES[f"{path} {mode.value}"] += 1
        STATUSES[response.status_code] += 1

    answers()
