"""Read your writes across processes: two `orderview api` processes and one projector."""

from __future__ import annotations

import asyncio

import httpx

from services.api.keys import create_key
from tests.chaos import ApiProcess
from tests.support import projector
from tests.writes import order_created, xadd


async def test_each_write_shows_at_once_on_either_api_process(
    pool, redis_client, settings, subprocess_env
):
    stream = settings.streams[0]
    async with pool.acquire() as conn:
        _, key = await create_key(conn, "acme", ["orders:read"])
    apis = [ApiProcess(subprocess_env), ApiProcess(subprocess_env)]
    try:
        await asyncio.gather(*(api.ready() for api in apis))
        async with projector(settings), httpx.AsyncClient(timeout=10) as client:
            for order_id in range(1, 121):
                position = await xadd(redis_client, stream, order_created("acme", order_id))
                base = apis[order_id % 2].base
                path = f"/v1/orders/ord_{order_id}" if order_id % 3 else "/v1/orders"
                response = await client.get(
                    base + path,
                    params={} if order_id % 3 else {"locationId": f"loc_ryw_{order_id}"},
                    headers={
                        "Authorization": f"Bearer {key}",
                        "X-Min-Position": f"{stream}@{position}",
                    },
                )
                assert response.status_code == 200, (order_id, response.text, apis[0].logs())
                data = response.json()["data"]
                ids = [o["id"] for o in data] if isinstance(data, list) else [data["id"]]
                assert ids == [f"ord_{order_id}"], (order_id, path, ids)
    finally:
        for api in apis:
            assert api.stop() == 0
