"""A second projector on one host, on the metrics port the first one holds."""

from __future__ import annotations

import asyncio
import socket

import httpx

from tests.support import ORDERVIEW, run_orderview


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_second_projector_on_a_taken_metrics_port_stops_with_one_line_exit_2(
    subprocess_env, pool
):
    env = {**subprocess_env, "ORDERVIEW_METRICS_PORT": str(free_port())}
    first = await asyncio.create_subprocess_exec(ORDERVIEW, "projector", env=env)
    try:
        url = f"http://127.0.0.1:{env['ORDERVIEW_METRICS_PORT']}/metrics"
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    if (await client.get(url)).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        second = await asyncio.to_thread(
            run_orderview, {**env, "ORDERVIEW_CONSUMER_NAME": "two"}, "projector"
        )
    finally:
        first.terminate()
        assert await first.wait() == 0
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert second.stderr.startswith(
        f"orderview: ORDERVIEW_METRICS_PORT {env['ORDERVIEW_METRICS_PORT']} cannot be served"
    )
