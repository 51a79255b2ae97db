"""Apply the plain-SQL migration files in order, once each, under an advisory lock."""

from __future__ import annotations

import logging
from importlib import resources
from string import Template

import asyncpg

from projections.tables import (
    MIGRATIONS,
    NAMES,
    READ_MODEL_NAMES,
    SERVICE_SCHEMA,
    read_model_names,
)

log = logging.getLogger("orderview.migrate")

# Any constant works; it only has to be the same for every process running migrations.
_LOCK_KEY = 0x6F72646572766965  # "orderview"


def _templates() -> list[tuple[str, str]]:
    """(version, text with placeholders) of every shipped migration, in order."""
    folder = resources.files("projections") / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) of every shipped migration, in order, with table names filled in."""
    return [(version, Template(text).substitute(NAMES)) for version, text in _templates()]


def read_model_templates() -> list[tuple[str, str]]:
    """The migrations that shape the read model (they name its tables), as templates. Such a
    migration names no service table: a rebuild replays these, and only these, into its schema."""
    return [(version, text) for version, text in _templates() if shapes_read_model(version, text)]


def shapes_read_model(version: str, text: str) -> bool:
    """Whether a migration names the read model's tables; one naming service tables too is an
    error (a rebuild could not replay it into its own schema)."""
    used = {m.group("named") or m.group("braced") for m in Template.pattern.finditer(text)}
    used -= {None, "service_schema"}  # a schema for functions, e.g. the triggers' (0009)
    if not used & set(READ_MODEL_NAMES):
        return False
    if used - set(READ_MODEL_NAMES):
        raise ValueError(f"migration {version} mixes read-model and service tables")
    return True


def read_model_sql(schema: str) -> list[str]:
    """The read model's migrations with its tables in `schema` (a rebuild's)."""
    names = read_model_names(schema)
    return [Template(text).substitute(names) for _, text in read_model_templates()]


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
        if applied and applied[0] == migration_files()[0][0]:
            from projections.release import record  # the read model is new: this release built it

            await record(conn)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied
