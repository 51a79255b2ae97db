"""Drains: SIGTERM to an API process under ~200 requests/s, and SIGTERM to projectors mid-batch.

The API test balances the load over two `orderview api` processes, as the Service does, and
SIGTERMs one of them. A request the draining process never accepted (connection refused, or an
idle keep-alive connection it closed before reading a request) is sent to the other process, as a
load balancer retries an idempotent GET; every request must end in a 200. The draining process
must answer what it accepted and exit 0. (tests/integration/test_api/test_process.py checks
requests held in flight by a table lock; this one adds the load.)

The projector test extends test_crash.py's single-stream SIGTERM test to four shards and repeated
SIGTERMs of the one projector while events arrive: each time, the consumer's batches are committed and acknowledged on
every stream and nothing is left pending for it.

    .venv/bin/pytest tests/reliability/test_drains.py -s
    ORDERVIEW_LONG=1 .venv/bin/pytest tests/reliability/test_drains.py -s
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter

import httpx

from orderview.settings import load_settings
from services.api.keys import create_key
from services.histories import varied
from tests.chaos import LONG, ApiProcess, Replicas, scale
from tests.model import differences, expected_state, table_state
from tests.reliability.test_chaos import in_hand, publish_paced
from tests.support import project, wait_until_caught_up

RATE = 200  # requests per second


class Balancer:
    """Round-robin over API processes; a GET the chosen one did not take goes to the next."""

    def __init__(self, bases: list[str], headers: dict[str, str]):
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=50)
        self.clients = [
            httpx.AsyncClient(base_url=b, headers=headers, timeout=30, limits=limits) for b in bases
        ]
        self.turn = 0
        self.outcomes: Counter[str] = Counter()

    async def get(self, path: str) -> None:
        self.turn += 1
        first, errors = self.turn, []
        for attempt in range(len(self.clients)):
            client = self.clients[(first + attempt) % len(self.clients)]
            try:
                response = await client.get(path)
            except httpx.ConnectError as exc:
                errors.append(repr(exc))
                self.outcomes["refused, sent to the other process"] += 1
                continue
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # The draining process closes idle keep-alive connections at once; a request
                # written just then is never read (RFC 9112 9.3.1: retry an idempotent request).
                # Requests it did read are answered: test_process.py holds some in flight.
                if "without sending a response" not in str(exc) and str(exc):
                    self.outcomes[f"failed: {exc!r}"] += 1
                    return
                errors.append(repr(exc))
                self.outcomes["keep-alive closed before the request was read, sent on"] += 1
                continue
            except httpx.HTTPError as exc:
                self.outcomes[f"failed: {exc!r}"] += 1
                return
            ok = response.status_code == 200 and response.content.startswith(b'{"success":true')
            self.outcomes["200" if ok else f"failed: {response.status_code}"] += 1
            return
        self.outcomes[f"failed: no process took it: {errors}"] += 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


async def test_sigterm_to_an_api_process_under_load_fails_no_request(
    env, subprocess_env, pool, redis_client, settings
):
    history = varied(9, tenants=1, orders=300)
    await project(redis_client, settings, [json.dumps(e) for e in history.events])
    async with pool.acquire() as conn:
        _, key = await create_key(conn, "tenant-0", ["orders:read"])
    env = {**subprocess_env, "ORDERVIEW_LOG_LEVEL": "ERROR"}
    draining, other = ApiProcess(env), ApiProcess(env)
    balancer = Balancer([draining.base, other.base], {"Authorization": f"Bearer {key}"})
    seconds = scale(6, 30)
    paths = ["/v1/orders?limit=20", "/v1/orders?limit=100&status=confirmed", "/v1/orders/ord_7"]
    try:
        await draining.ready()
        await other.ready()
        started = time.monotonic()
        requests: list[asyncio.Task] = []
        terminated_at = None
        for n in range(seconds * RATE):
            requests.append(asyncio.create_task(balancer.get(paths[n % len(paths)])))
            if terminated_at is None and time.monotonic() - started > seconds / 3:
                terminated_at = len(requests)
                draining.proc.send_signal(15)
            await asyncio.sleep(max(0.0, started + (n + 1) / RATE - time.monotonic()))
        await asyncio.gather(*requests)
        elapsed = time.monotonic() - started
        code = draining.proc.wait(40)
    finally:
        await balancer.aclose()
        draining_logs = draining.logs()
        draining.stop()
        other.stop()
    failed = {k: n for k, n in balancer.outcomes.items() if k.startswith("failed")}
    assert failed == {}, (balancer.outcomes, draining_logs)
    assert code == 0, draining_logs
    assert balancer.outcomes["200"] == len(requests)
    print(
        f"\nAPI drain ({'long' if LONG else 'short'}): {len(requests)} requests in {elapsed:.1f}s "
        f"({len(requests) / elapsed:.0f}/s), SIGTERM after {terminated_at}; "
        f"{dict(balancer.outcomes)}; failed 0"
    )


async def started(group: Replicas, name: str) -> None:
    """Wait for the latest start of `name` (its signal handlers are installed by then)."""
    for _ in range(600):
        if group.started(name):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} did not start: {group.logs()}")


async def test_sigterm_to_projectors_mid_batch_commits_and_acks_on_every_shard(
    env, pool, redis_client
):
    env = {
        **env,
        "ORDERVIEW_STREAMS": ",".join(f"{env['ORDERVIEW_STREAMS']}:{i}" for i in range(4)),
        "ORDERVIEW_BATCH_SIZE": "300",
        "ORDERVIEW_LOG_LEVEL": "INFO",
    }
    settings = load_settings(env)
    history = varied(23, orders=scale(3000, 6000))
    rng = random.Random(23)
    # One replica: with two, an entry may be held as a gap (its predecessor in the other's batch),
    # and a held gap stays pending by design until it can be applied.
    group = Replicas({**os.environ, **env}, 1)
    stops = mid_batch = 0
    try:
        # Published faster than one projector applies: a backlog, so a SIGTERM finds a batch.
        publishing = asyncio.create_task(
            publish_paced(redis_client, settings, [json.dumps(e) for e in history.events], 2)
        )
        await started(group, "projector-0")
        while stops < scale(4, 12):
            await asyncio.sleep(rng.uniform(0.2, 0.5))
            name = rng.choice(sorted(group.procs))
            mid_batch += await in_hand(redis_client, settings, name) > 0
            proc = group.procs.pop(name)
            proc.send_signal(15)
            assert proc.wait(30) == 0, group.logs()
            assert await in_hand(redis_client, settings, name) == 0, name
            stops += 1
            group.start(name)
            await started(group, name)
        await publishing
        await wait_until_caught_up(redis_client, settings, timeout=120)
        codes = group.stop_all()
    finally:
        logs = group.logs()
        group.close()
    assert set(codes.values()) == {0}, logs
    assert mid_batch >= stops // 2, "the projector was idle at most SIGTERMs: publish more"
    assert differences(expected_state(history.events), await table_state(pool)) == []
    print(
        f"\nprojector drain: {len(history.events)} events on 4 shards, {stops} SIGTERMs "
        f"({mid_batch} with entries in hand), nothing left pending, lost 0"
    )
