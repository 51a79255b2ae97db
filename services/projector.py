"""The projector process: one StreamConsumer task per configured stream, stopped by a signal."""

from __future__ import annotations

import asyncio
import logging
import signal

import asyncpg
from prometheus_client import start_http_server

from orderview.db import create_pool, redis_client
from orderview.settings import Settings, SettingsError
from projections import release
from projections.consumer import Options, StreamConsumer

log = logging.getLogger("orderview.projector")


def options_from(settings: Settings) -> Options:
    """The consumer options the settings describe."""
    return Options(
        group=settings.consumer_group,
        consumer=settings.consumer,
        batch_size=settings.batch_size,
        block_ms=settings.block_ms,
        gap_timeout=settings.gap_timeout,
        claim_idle_ms=settings.claim_idle_ms,
    )


def serve_metrics(port: int) -> None:
    """Serve Prometheus metrics on `port`; a port already taken stops the process (exit 2)."""
    try:
        start_http_server(port)
    except OSError as exc:
        raise SettingsError(
            f"ORDERVIEW_METRICS_PORT {port} cannot be served ({exc.strerror}): another projector "
            "on this host? set another port, or 0 for none"
        ) from None


async def run_projector(settings: Settings, stopping: asyncio.Event | None = None) -> None:
    """Project every configured stream until SIGTERM/SIGINT (or `stopping`), then exit cleanly."""
    if stopping is None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
    if settings.metrics_port:
        serve_metrics(settings.metrics_port)
    pool = await create_pool(
        settings.require("database_url"), name="projector", max_size=2 * len(settings.streams) + 1
    )
    try:
        await release.check(pool, "projector")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:  # not worth a stop
        log.warning("could not read which release built the read model", extra={"error": repr(exc)})
    options = options_from(settings)
    client = redis_client(settings, f"orderview-projector:{options.consumer}")
    consumers = [StreamConsumer(client, pool, s, options) for s in settings.streams]
    log.info(
        "projector started",
        extra={
            "streams": list(settings.streams),
            "group": options.group,
            "consumer": options.consumer,
        },
    )
    try:
        await asyncio.gather(*(c.run(stopping) for c in consumers))
    finally:
        await client.aclose()
        await pool.close()
    log.info("projector stopped")
