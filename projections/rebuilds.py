"""The `orderview.rebuilds` table: each rebuild's phase, position and rate, for `orderview status`."""

from __future__ import annotations

from typing import Any

import asyncpg

from projections.release import fingerprint, recorded
from projections.tables import REBUILDS

# Held (session level) by the one rebuild that runs; a second one refuses to start.
REBUILD_LOCK = 0x6F767262  # "ovrb"

_RUNNING = """
SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
               AND classid = 0 AND objid = $1 AND objsubid = 1)
"""


async def start(conn: asyncpg.Connection, source: str, total: int) -> int:
    """Record a rebuild starting; rows of rebuilds that were killed are closed as such."""
    await conn.execute(
        f"UPDATE {REBUILDS} SET phase = 'killed', finished_at = now() WHERE finished_at IS NULL"
    )
    return await conn.fetchval(
        f"INSERT INTO {REBUILDS} (source, phase, total, fingerprint)"
        " VALUES ($1, 'prepare', $2, $3) RETURNING id",
        source,
        total,
        fingerprint(),
    )


async def update(
    conn: asyncpg.Connection, rebuild: int, phase: str, position: int, rate: float | None
) -> None:
    """Record a rebuild's phase, entries read so far and entries/s."""
    await conn.execute(
        f"UPDATE {REBUILDS} SET phase = $2, position = $3, rate = $4, updated_at = now()"
        " WHERE id = $1",
        rebuild,
        phase,
        position,
        rate,
    )


async def finish(conn: asyncpg.Connection, rebuild: int, phase: str) -> None:
    """Record a rebuild's end (`done` or `failed`)."""
    await conn.execute(
        f"UPDATE {REBUILDS} SET phase = $2, finished_at = now(), updated_at = now() WHERE id = $1",
        rebuild,
        phase,
    )


async def running(conn: asyncpg.Connection | asyncpg.Pool) -> bool:
    """Whether a rebuild process holds the rebuild lock in this database now."""
    return bool(await conn.fetchval(_RUNNING, REBUILD_LOCK))


async def rebuild_status(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Any]:
    """What `orderview status` shows: the latest rebuild (running or not; a row left unfinished
    by a killed process reads `killed`) and which release built the read model."""
    row = await conn.fetchrow(f"SELECT * FROM {REBUILDS} ORDER BY id DESC LIMIT 1")
    latest = dict(row) if row else None
    alive = await running(conn)
    if latest and latest["finished_at"] is None and not alive:
        latest["phase"] = "killed"
    built = await recorded(conn)
    return {
        "rebuild": latest,
        "rebuild_running": alive and latest is not None and latest["finished_at"] is None,
        "read_model_release": (built or {}).get("fingerprint"),
        "read_model_built_at": (built or {}).get("built_at"),
        "this_release": fingerprint(),
    }
