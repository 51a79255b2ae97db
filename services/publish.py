"""`orderview publish FILE`: append a JSON-lines file of envelopes to the streams, sharded."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import redis.asyncio as redis
from tqdm import tqdm

from projections.events import stream_for

log = logging.getLogger("orderview.publish")

PIPELINE_SIZE = 1000


class _Route(msgspec.Struct):
    """The fields routing needs; anything else in the line is carried as is."""

    tenant: str = ""
    type: str = ""
    aggregate_id: int = 0


_route = msgspec.json.Decoder(_Route)


def route(streams: tuple[str, ...], line: bytes, unroutable: str | None = None) -> str:
    """The stream of one JSON line; lines that cannot be routed go to `unroutable`, by default
    the first stream."""
    try:
        r = _route.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        # valid JSON, invalid envelope: the projector will dead-letter it
        return streams[0] if unroutable is None else unroutable
    return stream_for(streams, r.tenant, r.type.partition(".")[0], r.aggregate_id)


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of every non-blank line that is JSON; others are reported."""
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                msgspec.json.decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # bad UTF-8 in a string
                log.warning("line is not JSON, skipped", extra={"line": number, "error": str(exc)})
                print(f"{path}:{number}: not JSON, skipped ({exc})", file=sys.stderr)
                continue
            except RecursionError:
                pass  # too deep to check here: published, the projector dead-letters it
            yield number, line


async def publish(client: redis.Redis, streams: tuple[str, ...], lines: Iterator[bytes]) -> int:
    """XADD each line to its stream in pipelined batches; return how many were added."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(route(streams, line), {"event": line})
        count += 1
        if len(pipe) >= PIPELINE_SIZE:
            await pipe.execute()
    if len(pipe):
        await pipe.execute()
    return count


async def publish_file(client: redis.Redis, streams: tuple[str, ...], path: Path) -> int:
    """Publish a file with a progress bar on a terminal (periodic log lines otherwise)."""
    total = path.stat().st_size
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="publishing", disable=None)

    def lines() -> Iterator[bytes]:
        for n, line in read_lines(path):
            bar.update(len(line) + 1)
            if bar.disable and n % 100_000 == 0:
                log.info("publishing", extra={"lines": n})
            yield line

    try:
        count = await publish(client, streams, lines())
    finally:
        bar.close()
    log.info("published", extra={"events": count, "streams": list(streams)})
    return count
