"""Which release built the read model: a fingerprint of its schema and of its rendering.

The fingerprint is kept as the comment of the read model's schema, so that it moves with the schema
when a rebuild swaps one in. A process whose own fingerprint differs says so at start (a log line
and the `orderview_read_model_outdated` gauge): the documents it would write differ from the stored
ones, or the tables do, and a rebuild is due.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata

import asyncpg
import msgspec

from projections import metrics
from projections.documents import render_order, render_participant
from projections.fold import OrderState, ParticipantState, StoredItem
from projections.migrate import read_model_templates
from projections.tables import READ_SCHEMA

log = logging.getLogger("orderview.release")

_AT = datetime(2024, 2, 29, 12, 30, 15, 123456, tzinfo=UTC)
_SAMPLE_ORDER = OrderState(
    "tenant", 7, 9, "booking", "confirmed", "paid", "EUR", "SO-7", "expo", 3, "loc", _AT, 90,
    "a note", (StoredItem(1, "lamp", 2, Decimal("9.99"), Decimal("0.19"), "svc"),), _AT, _AT,
    None, None, _AT, _AT,
)  # fmt: skip
_SAMPLE_PARTICIPANT = ParticipantState("tenant", 3, 2, "Ada", "ada@example.com", _AT)


def rendering_sample() -> bytes:
    """Every document the projector renders, for one sample order and participant."""
    order = render_order(_SAMPLE_ORDER)
    participant = render_participant(_SAMPLE_PARTICIPANT)
    return msgspec.msgpack.encode((order, participant))


@functools.cache
def fingerprint() -> str:
    """This release's fingerprint: package version, read-model migrations, rendering."""
    digest = hashlib.sha256(metadata.version("orderview").encode())
    for version, template in read_model_templates():
        digest.update(version.encode() + b"\0" + template.encode())
    digest.update(rendering_sample())
    return f"{metadata.version('orderview')}+{digest.hexdigest()[:12]}"


async def record(conn: asyncpg.Connection, schema: str = READ_SCHEMA, by: str = "migrate") -> None:
    """Write this release's fingerprint on `schema` (the one it built)."""
    note = json.dumps({"fingerprint": fingerprint(), "built_by": by, "built_at": _now()})
    await conn.execute(f"COMMENT ON SCHEMA {schema} IS {_literal(note)}")


async def recorded(conn: asyncpg.Connection | asyncpg.Pool) -> dict | None:
    """What the read model's schema records about the release that built it; None if nothing."""
    note = await conn.fetchval(
        "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = $1",
        READ_SCHEMA,
    )
    try:
        return json.loads(note) if note else None
    except ValueError:
        return None


async def check(conn: asyncpg.Connection | asyncpg.Pool, process: str) -> bool:
    """Log and export whether the read model was built by this release; True when it was."""
    built = await recorded(conn)
    same = built is not None and built.get("fingerprint") == fingerprint()
    metrics.READ_MODEL_OUTDATED.set(0 if same else 1)
    if not same:
        log.warning(
            "the read model was built by another release: run `orderview rebuild`",
            extra={
                "component": process,
                "built_by_release": (built or {}).get("fingerprint", "unknown"),
                "this_release": fingerprint(),
            },
        )
    return same


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _literal(text: str) -> str:
    """A SQL string literal (COMMENT takes no bind parameter)."""
    return "'" + text.replace("'", "''") + "'"
