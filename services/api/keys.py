"""`orderview keys create|revoke` and `orderview features enable|disable`."""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import sys

import asyncpg

from orderview.settings import Settings, SettingsError
from projections.tables import API_KEYS, TENANT_FEATURES
from services.api.auth import FEATURES, SCOPES, hash_key

_TENANT = re.compile(r"[a-z0-9_-]{1,64}")
_FEATURE = re.compile(r"[a-z0-9_:.-]{1,64}")


def new_key() -> tuple[str, str]:
    """(id, plaintext) of a fresh key: 256 random bits."""
    return f"key_{secrets.token_hex(8)}", f"ovk_{secrets.token_urlsafe(32)}"


async def create_key(conn: asyncpg.Connection, tenant: str, scopes: list[str]) -> tuple[str, str]:
    """Store a new key's hash; return its id and plaintext (shown once, never stored)."""
    key_id, plaintext = new_key()
    await conn.execute(
        f"INSERT INTO {API_KEYS} (id, tenant, key_hash, scopes) VALUES ($1, $2, $3, $4)",
        key_id,
        tenant,
        hash_key(plaintext),
        scopes,
    )
    return key_id, plaintext


async def revoke_key(conn: asyncpg.Connection, key: str) -> str | None:
    """Revoke a key given by id or plaintext; its id, or None when no such key exists."""
    return await conn.fetchval(
        f"UPDATE {API_KEYS} SET revoked_at = coalesce(revoked_at, now())"
        " WHERE id = $1 OR key_hash = $2 RETURNING id",
        key,
        hash_key(key),
    )


async def set_feature(conn: asyncpg.Connection, tenant: str, feature: str, enabled: bool) -> None:
    """Turn a tenant feature on or off."""
    await conn.execute(
        f"INSERT INTO {TENANT_FEATURES} (tenant, feature, enabled) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant, feature) DO UPDATE SET enabled = $3, updated_at = now()",
        tenant,
        feature,
        enabled,
    )


def _scopes(text: str) -> list[str]:
    scopes = sorted({s.strip() for s in text.split(",") if s.strip()})
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise SettingsError(f"--scopes must be a comma-separated list of {', '.join(SCOPES)}")
    return scopes


def _tenant(text: str) -> str:
    if not _TENANT.fullmatch(text):
        raise SettingsError("--tenant must be 1-64 characters of a-z 0-9 _ -")
    return text


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(settings.require("database_url"))


def keys_command(settings: Settings, args: argparse.Namespace) -> int:
    """Create a key (plaintext alone on the last line) or revoke one by id or plaintext."""

    async def main() -> int:
        conn = await _connect(settings)
        try:
            if args.action == "create":
                tenant, scopes = _tenant(args.tenant), _scopes(args.scopes)
                key_id, plaintext = await create_key(conn, tenant, scopes)
                print(f"created {key_id} for tenant {tenant} with scopes {','.join(scopes)}")
                print(plaintext)
                return 0
            key_id = await revoke_key(conn, args.key)
            if key_id is None:
                print("orderview: no such key", file=sys.stderr)
                return 1
            print(f"revoked {key_id}")
            return 0
        finally:
            await conn.close()

    return asyncio.run(main())


def features_command(settings: Settings, args: argparse.Namespace) -> int:
    """Enable or disable a tenant feature such as `service_orders`."""
    tenant = _tenant(args.tenant)
    if not _FEATURE.fullmatch(args.feature):
        raise SettingsError("FEATURE must be 1-64 characters of a-z 0-9 _ : . -")

    async def main() -> None:
        conn = await _connect(settings)
        try:
            await set_feature(conn, tenant, args.feature, args.action == "enable")
        finally:
            await conn.close()

    asyncio.run(main())
    print(f"{args.action}d {args.feature} for tenant {tenant}")
    if args.feature not in FEATURES:  # stored all the same: a later version may check it
        print(
            f"orderview: note: no endpoint of this version checks {args.feature!r} "
            f"(those checked: {', '.join(FEATURES)})",
            file=sys.stderr,
        )
    return 0
