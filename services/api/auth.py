"""API keys and their check: 401 unauthorized, 403 insufficient_scope, then 403 feature_disabled.

Only a key's SHA-256 is stored (keys are 256-bit random, so a slow hash adds nothing). Each process
caches a looked-up key, unknown keys included, for at most ORDERVIEW_KEY_CACHE_SECONDS (<= 5), so a
revocation or a feature change reaches every process within 5 seconds without a database round
trip per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterable

import asyncpg
from msgspec import Struct
from prometheus_client import Counter

from projections.tables import API_KEYS, TENANT_FEATURES

SCOPES = ("service_orders", "orders:read")
FEATURES = ("service_orders",)  # the tenant features some endpoint checks
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/=-]{1,256})")
_LOOKUP = f"""
SELECT k.tenant, k.scopes,
       ARRAY(SELECT f.feature FROM {TENANT_FEATURES} f WHERE f.tenant = k.tenant AND f.enabled)
FROM {API_KEYS} k WHERE k.key_hash = $1 AND k.revoked_at IS NULL
"""

KEY_LOOKUPS = Counter("orderview_api_key_lookups_total", "API key lookups that reached PostgreSQL")


class Grant(Struct, frozen=True):
    """What a valid key allows: its tenant, its scopes and the tenant's enabled features."""

    tenant: str
    scopes: frozenset[str]
    features: frozenset[str]


class Unauthorized(Exception):
    """No valid key: 401 `unauthorized`."""


class Forbidden(Exception):
    """A valid key that may not do this: 403 with `code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def hash_key(plaintext: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(plaintext.encode()).digest()


class KeyCache:
    """Looked-up keys of this process, each trusted for `ttl` seconds; one lookup per key at once."""

    def __init__(self, pool: asyncpg.Pool, ttl: float, max_entries: int = 10_000) -> None:
        self._pool, self._ttl, self._max = pool, ttl, max_entries
        self._entries: dict[bytes, tuple[float, Grant | None]] = {}
        self._lookups: dict[bytes, asyncio.Future[Grant | None]] = {}

    async def grant(self, authorization: str | None) -> Grant:
        """The grant of an `Authorization: Bearer <key>` header; Unauthorized if there is none."""
        match = _BEARER.fullmatch(authorization.strip()) if authorization else None
        if match is None:
            raise Unauthorized("send `Authorization: Bearer <api key>`")
        digest = hash_key(match[1])
        entry = self._entries.get(digest)
        grant = entry[1] if entry and entry[0] > time.monotonic() else await self._lookup(digest)
        if grant is None:
            raise Unauthorized("the API key is unknown or revoked")
        return grant

    async def _lookup(self, digest: bytes) -> Grant | None:
        pending = self._lookups.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Grant | None] = asyncio.get_running_loop().create_future()
        self._lookups[digest] = future
        try:
            KEY_LOOKUPS.inc()
            row = await self._pool.fetchrow(_LOOKUP, digest)
            grant = None if row is None else Grant(row[0], frozenset(row[1]), frozenset(row[2]))
            if len(self._entries) >= self._max:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self._ttl, grant)
            future.set_result(grant)
            return grant
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._lookups[digest]


class Access(Struct, frozen=True):
    """What an endpoint asks of a key: a scope, and a feature of its tenant when it has one."""

    scope: str
    feature: str | None = None


SERVICE_ORDERS = Access("service_orders", feature=FEATURES[0])
ORDERS = Access("orders:read")


async def tenant_of(cache: KeyCache, headers: Iterable[tuple[bytes, bytes]], access: Access) -> str:
    """The tenant a request may read as: 401, then 403 insufficient_scope, then feature_disabled."""
    grant = await cache.grant(_authorization(headers))
    if access.scope not in grant.scopes:
        raise Forbidden("insufficient_scope", f"this API key lacks the `{access.scope}` scope")
    feature = access.feature
    if feature is not None and feature not in grant.features:
        raise Forbidden(
            "feature_disabled", f"the `{feature}` feature is not enabled for this tenant"
        )
    return grant.tenant


def _authorization(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The first Authorization header, read from the raw ASGI headers (names are lower case)."""
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
