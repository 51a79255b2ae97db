"""The contract's conformance example, served by the API after the real projector ran it."""

from __future__ import annotations

import json

import pytest

from projections.tables import ORDERS, PARTICIPANTS
from tests.integration.test_projector_examples import comparable
from tests.support import project

# Part of the smoke subset CI runs on embedded PostgreSQL and Valkey.
pytestmark = pytest.mark.smoke


@pytest.fixture(scope="module")
async def example(db, rclient, api_settings, examples):
    await db.execute(f"TRUNCATE {ORDERS}, {PARTICIPANTS}")
    await project(rclient, api_settings, (examples / "events.jsonl").read_text().splitlines())


async def test_service_orders_with_items_and_participant_are_the_example_data(
    example, client, acme, examples
):
    response = await client.get(
        "/api/v1/service-orders?include=items,participant&limit=100", headers=acme
    )

    assert response.status_code == 200
    expected = json.loads((examples / "service-orders.json").read_text())
    assert comparable(response.json()["data"]) == comparable(expected["data"])


async def test_orders_are_the_example_data_in_the_example_envelope(example, client, acme, examples):
    response = await client.get("/v1/orders?limit=100", headers=acme)

    assert response.status_code == 200
    expected = json.loads((examples / "orders.json").read_text())
    body = response.json()
    assert comparable(body["data"]) == comparable(expected["data"])
    assert body["success"] is True
    assert body["pagination"] == {"hasMore": False, "nextCursor": None}


async def test_each_example_order_is_served_alone_in_both_dialects(example, client, acme, examples):
    v1 = json.loads((examples / "service-orders.json").read_text())["data"]
    v2 = json.loads((examples / "orders.json").read_text())["data"]

    for order in v1:
        response = await client.get(
            f"/api/v1/service-orders/{order['id']}?include=items,participant", headers=acme
        )
        assert comparable(response.json()["data"]) == comparable(order)
    for order in v2:
        response = await client.get(f"/v1/orders/{order['id']}", headers=acme)
        assert response.json() == {"success": True, "data": response.json()["data"]}
        assert comparable(response.json()["data"]) == comparable(order)
