"""Apply the plain-SQL migration files in order, once each, under an advisory lock."""

from __future__ import annotations

import logging
from importlib import resources
from string import Template

import asyncpg

from projections.tables import MIGRATIONS, NAMES, SERVICE_SCHEMA

log = logging.getLogger("orderview.migrate")

# Any constant works; it only has to be the same for every process running migrations.
_LOCK_KEY = 0x6F72646572766965  # "orderview"


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) of every shipped migration, in order, with table names filled in."""
    folder = resources.files("projections") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), Template(f.read_text()).substitute(NAMES)) for f in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Bring the schema up to date; return the versions applied by this call."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            f"CREATE SCHEMA IF NOT EXISTS {SERVICE_SCHEMA};"
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS} ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {MIGRATIONS}")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(f"INSERT INTO {MIGRATIONS} (version) VALUES ($1)", version)
            log.info("migration applied", extra={"version": version})
            applied.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied
