"""`orderview rebuild`: the whole read model built again in a schema of its own, then swapped in.

Phases (each recorded in `orderview.rebuilds`): `replay` folds the file (if any) and every stream
from its first entry in windows, keeping the orders in memory (bounded, see projections.replay) and
writing each when it goes out, by COPY into tables without secondary indexes; `indexes` copies the
participants changed since into their orders, builds the indexes, ANALYZE;
`catch-up` applies what arrived meanwhile by the live path; `swap` takes the read-model lock
exclusively (the live batches in flight commit first, the next ones wait), applies the streams'
tails, renames the schemas and commits; the old schema is dropped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as redis
import redis.exceptions
from tqdm import tqdm

from orderview.db import redis_client
from orderview.settings import Settings
from projections import rebuilds, release, shadow
from projections.invalidation import flush_all
from projections.migrate import migration_files
from projections.replay import RESIDENT, Folded, Replay
from projections.tables import MIGRATIONS, NEXT_SCHEMA
from projections.writer import READ_MODEL_LOCK, copy_all_participants
from services.publish import read_lines

log = logging.getLogger("orderview.rebuild")
T = TypeVar("T")

WINDOW = 20_000  # entries folded at once while replaying (and orders written at once at its end)
READ_COUNT = 5_000  # entries per XREADGROUP while replaying
SWAP_LOCK_TIMEOUT = (
    "5s"  # a swap that cannot take the lock this fast lets batches run, then retries
)
PROGRESS_SECONDS = 2.0


class RebuildBusy(Exception):
    """Another rebuild holds the rebuild lock."""


class NotMigrated(Exception):
    """The read model is not at this release's migrations."""


class Progress:
    """A bar with entries/s and time left on a terminal, a log line every few seconds otherwise,
    and the rebuild's row in `orderview.rebuilds` every PROGRESS_SECONDS."""

    def __init__(self, conn: asyncpg.Connection, rebuild: int, total: int):
        self.conn, self.rebuild = conn, rebuild
        self.position, self.phase_name = 0, "replay"
        self.bar = tqdm(total=total, unit=" entries", desc="replay", disable=None, smoothing=0.05)
        self.started = self._saved = self._logged = time.monotonic()

    def rate(self) -> float:
        return self.position / max(time.monotonic() - self.started, 1e-6)

    async def advance(self, count: int) -> None:
        self.position += count
        self.bar.update(count)
        now = time.monotonic()
        if self.bar.disable and now - self._logged >= 5:
            self._logged = now
            log.info("rebuilding", extra=self._fields())
        if now - self._saved >= PROGRESS_SECONDS:
            self._saved = now
            await self.save()

    async def phase(self, name: str) -> None:
        self.phase_name = name
        self.bar.set_description(name)
        log.info("rebuild phase", extra=self._fields())
        await self.save()

    async def save(self) -> None:
        await rebuilds.update(self.conn, self.rebuild, self.phase_name, self.position, self.rate())

    def close(self) -> None:
        self.bar.close()

    def _fields(self) -> dict[str, Any]:
        total = self.bar.total or 0
        rate = self.rate()
        left = (total - self.position) / rate if rate and total > self.position else 0
        return {
            "phase": self.phase_name,
            "position": self.position,
            "total": total,
            "entries_per_s": round(rate),
            "eta_s": round(left),
        }


class Streams:
    """Every configured stream read from its first entry through the rebuild's own consumer
    group (the live group is untouched); NOACK: nothing stays pending."""

    def __init__(self, client: redis.Redis, settings: Settings):
        self.client = client
        self.streams = settings.streams
        self.group = f"{settings.consumer_group}-rebuild"
        self.consumer = f"rebuild:{settings.consumer}"

    async def reset(self) -> int:
        """The group made anew at the start of every stream; return the entries there are."""
        total = 0
        await self.remove()
        for stream in self.streams:
            await self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            total += await self.client.xlen(stream)
        return total

    async def read(self, stream: str, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The next entries of a stream (at most `count`); empty at its end."""
        reply = await self.client.xreadgroup(
            self.group, self.consumer, {stream: ">"}, count=count, noack=True
        )
        return reply[0][1] if reply else []

    async def remove(self) -> None:
        for stream in self.streams:
            with contextlib.suppress(redis.exceptions.ResponseError):  # no such stream
                await self.client.xgroup_destroy(stream, self.group)


def file_windows(path: Path, size: int) -> Iterator[list[tuple[int, dict[bytes, bytes]]]]:
    """A file's lines as entries (keyed by line number), `size` at a time; lines that are not
    JSON are reported and skipped by `publish`'s reader."""
    window: list[tuple[int, dict[bytes, bytes]]] = []
    for number, line in read_lines(path):
        window.append((number, {b"event": line}))
        if len(window) >= size:
            yield window
            window = []
    if window:
        yield window


async def _collecting(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """`items`, with the cyclic GC's automatic passes paused and its young generation collected
    once per item. A replay makes millions of objects (entries, events, states, rows) that hold
    no cycle; the automatic passes traversed the live ones again and again, for about a quarter
    of the replay's CPU. Once per window, the young objects alive are few."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        async for item in items:
            gc.collect(0)
            yield item
    finally:
        if enabled:
            gc.enable()


async def _aiter(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item


def count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


class Rebuild:
    """One run of `orderview rebuild` on its own connection, holding the rebuild lock.
    `window`: entries folded at once; `resident`: orders kept in memory (see projections.replay)."""

    def __init__(
        self,
        settings: Settings,
        conn: asyncpg.Connection,
        writer: asyncpg.Connection,
        client: redis.Redis,
        window: int = WINDOW,
        resident: int = RESIDENT,
    ):
        self.settings = settings
        self.conn = conn
        self.writer = writer
        self.streams = Streams(client, settings)
        self.window = window
        self.replay = Replay(conn, NEXT_SCHEMA, resident)
        self.progress: Progress | None = None

    async def run(self, source: Path | None) -> dict[str, int]:
        """Build, catch up, swap; return what happened to the entries."""
        await self.prepare()
        total = await self.streams.reset() + (count_lines(source) if source else 0)
        rebuild = await rebuilds.start(
            self.conn, str(source or ",".join(self.streams.streams)), total
        )
        self.progress = progress = Progress(self.writer, rebuild, total)
        try:
            indexes = await shadow.create(self.conn)
            await progress.phase("replay")
            if source is not None:
                await self.pipeline(self.folded(None, _aiter(file_windows(source, self.window))))
            for stream in self.streams.streams:
                await self.pipeline(self.folded(stream, self.stream_windows(stream)))
            await self.pipeline(_aiter((f, 0) for f in self.replay.flush(self.window)))
            await progress.phase("indexes")
            await copy_all_participants(self.conn, NEXT_SCHEMA)
            await shadow.build_indexes([self.conn, self.writer], indexes)
            await progress.phase("catch-up")
            await self.catch_up()
            await progress.phase("swap")
            await self.swap()
            await shadow.drop_old(self.conn)
            await self.streams.remove()
            await rebuilds.finish(self.conn, rebuild, "done")
        except BaseException:
            await asyncio.shield(self._failed(rebuild))
            raise
        finally:
            progress.close()
        return dict(self.replay.counts, held=len(self.replay.held), read=progress.position)

    async def prepare(self) -> None:
        """Refuse to run beside another rebuild or on an unmigrated database; clean up."""
        if not await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", rebuilds.REBUILD_LOCK):
            raise RebuildBusy("another rebuild is running (it holds the rebuild lock)")
        done = {r[0] for r in await self.conn.fetch(f"SELECT version FROM {MIGRATIONS}")}
        missing = [v for v, _ in migration_files() if v not in done]
        if missing:
            raise NotMigrated(f"the database lacks migrations {missing}: run `orderview migrate`")
        await shadow.clean_up(self.conn)

    async def apply(self, stream: str | None, entries: list, bulk: bool) -> None:
        async with self.conn.transaction():
            await self.replay.apply(stream, entries, bulk)
        assert self.progress is not None
        await self.progress.advance(len(entries))

    async def pipeline(self, folds: AsyncIterator[tuple[Folded, int]]) -> None:
        """Write what `folds` yields (folded states, entries they account for), one write in
        flight on the writer connection while the next is read, folded and rendered."""
        writing: asyncio.Task | None = None
        try:
            async for folded, count in _collecting(folds):
                if writing is not None:
                    await writing
                writing = asyncio.create_task(self.write(folded, count))
            if writing is not None:
                await writing
        finally:
            if writing is not None and not writing.done():
                writing.cancel()

    async def folded(
        self, stream: str | None, windows: AsyncIterator[list]
    ) -> AsyncIterator[tuple[Folded, int]]:
        """Each window folded in bulk on the states in memory or stored, overlaid with those of
        the window before (being written meanwhile)."""
        base = None
        async for window in windows:
            folded = await self.replay.fold_window(stream, window, base)
            base = folded.plan
            yield folded, len(window)

    async def stream_windows(self, stream: str) -> AsyncIterator[list]:
        """A stream's entries from its first to its current end, `window` at a time; the next
        window is read while the one before is folded."""
        reading = asyncio.create_task(self.read_window(stream))
        try:
            while window := await reading:
                reading = asyncio.create_task(self.read_window(stream))
                yield window
        finally:
            reading.cancel()

    async def read_window(self, stream: str) -> list:
        """The next `window` entries of a stream (fewer at its end; none past it)."""
        window: list = []
        while len(window) < self.window and (
            entries := await self.streams.read(stream, min(READ_COUNT, self.window - len(window)))
        ):
            window += entries
        return window

    async def write(self, folded: Folded, count: int) -> None:
        async with self.writer.transaction():
            await self.replay.write(self.writer, folded, bulk=True)
        assert self.progress is not None
        await self.progress.advance(count)

    async def catch_up(self) -> None:
        """Apply what arrived during the replay by the live path, until a pass over the streams
        finds less than one batch: the rest is applied during the swap."""
        batch = self.settings.batch_size
        while True:
            read = 0
            for stream in self.streams.streams:
                while entries := await self.streams.read(stream, batch):
                    read += len(entries)
                    await self.apply(stream, entries, bulk=False)
                    if len(entries) < batch:
                        break
            if read < batch:
                return

    async def swap(self) -> None:
        """In one transaction: wait for the live batches in flight, apply the streams' tails,
        record this release on the new schema and swap it in. A lock not granted within
        SWAP_LOCK_TIMEOUT (live batches may be queued behind the swap's request) rolls back,
        lets them run, and tries again."""
        for attempt in range(1, 1000):
            try:
                async with self.conn.transaction():
                    await self.conn.execute(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'")
                    await self.conn.execute("SELECT pg_advisory_xact_lock($1)", READ_MODEL_LOCK)
                    await self.conn.execute("SET LOCAL lock_timeout = 0")
                    await self.conn.execute("SET LOCAL synchronous_commit = on")
                    await self.apply_tails()
                    await release.record(self.conn, NEXT_SCHEMA, by="rebuild")
                    await shadow.rename(self.conn)
                    await flush_all(self.conn)  # every API's document cache, at the commit
                    await rebuilds.update(self.conn, self.progress.rebuild, "swapped",
                                          self.progress.position, self.progress.rate())  # fmt: skip
                return
            except asyncpg.exceptions.LockNotAvailableError:
                log.info("swap waits for the live projector's batches", extra={"attempt": attempt})
                await asyncio.sleep(0.2)
        raise RuntimeError("the swap never got the read-model lock")

    async def apply_tails(self) -> None:
        """Every stream to its end, by the live path, inside the swap's transaction."""
        for stream in self.streams.streams:
            while entries := await self.streams.read(stream, self.settings.batch_size):
                await self.replay.apply(stream, entries, bulk=False)
                assert self.progress is not None
                self.progress.position += len(entries)

    async def _failed(self, rebuild: int) -> None:
        # The connection may be the reason; then the next run closes the row.
        with contextlib.suppress(Exception):
            await rebuilds.finish(self.conn, rebuild, "failed")


async def run_rebuild(
    settings: Settings, source: Path | None = None, **sizes: int
) -> dict[str, int]:
    """Run a rebuild to its swap; raise RebuildBusy when another one runs. `sizes`: `window`,
    `resident` (see Rebuild), for tests that need many windows from a short history."""
    dsn = settings.require("database_url")
    # A crash means starting over: the rebuild's commits need not wait for the disk (the swap's
    # commit does, see Rebuild.swap).
    server_settings = {"application_name": "orderview-rebuild", "synchronous_commit": "off"}
    conn = await asyncpg.connect(dsn, server_settings=server_settings)
    client = redis_client(settings, f"orderview-rebuild:{settings.consumer}")
    try:
        writer = await asyncpg.connect(dsn, server_settings=server_settings)
        try:
            return await Rebuild(settings, conn, writer, client, **sizes).run(source)
        finally:
            await writer.close()
    finally:
        await client.aclose()
        await conn.close()


def rebuild_command(settings: Settings, args: Any) -> int:
    """`orderview rebuild [--from FILE] [--yes]`."""
    import sys

    from orderview.cli import _run
    from orderview.settings import SettingsError

    source = Path(args.source) if args.source else None
    if source is not None and not source.is_file():
        raise SettingsError(f"--from {args.source!r} is not a readable file")
    settings.require("database_url"), settings.require("redis_url")
    if not args.yes:
        if not sys.stdin.isatty():
            print("orderview: rebuild asks before it starts: pass --yes to run without a terminal",
                  file=sys.stderr)  # fmt: skip
            return 2
        what = f"{source} and the streams" if source else "the streams"
        answer = input(f"Rebuild the read model from {what}, then swap it in? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not started")
            return 1
    try:
        counts = _run(run_rebuild(settings, source))
    except (RebuildBusy, NotMigrated) as exc:
        print(f"orderview: {exc}", file=sys.stderr)
        return 1
    print("rebuilt and swapped in: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0
