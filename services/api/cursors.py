"""Opaque, signed pagination cursors, bound to the query they came from. Nothing here does I/O.

A cursor is base64url(msgpack([version, key, id]) + tag), where tag is an HMAC-SHA256 (first 16
bytes) over the query's context (dialect, tenant, filters, sort, direction) and the payload. A
cursor used with another tenant, other filters or another sort fails the check like a tampered one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

VERSION = 1
TAG_BYTES = 16
MAX_CURSOR_CHARS = 1024

Key = str | int | None


class Position(msgspec.Struct, frozen=True, array_like=True):
    """Where the previous page ended: its last order's sort key (None in the null section) and id."""

    version: int
    key: Key
    id: int


class CursorError(ValueError):
    """A cursor that is malformed, tampered with, or from another query."""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Position)


def _tag(secret: bytes, context: bytes, payload: bytes) -> bytes:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(len(context).to_bytes(4, "big"))
    mac.update(context)
    mac.update(payload)
    return mac.digest()[:TAG_BYTES]


def encode_cursor(secret: bytes, context: bytes, key: Key, order_id: int) -> str:
    """The cursor of the page that continues after (key, order_id) in the query `context`."""
    payload = _encoder.encode(Position(VERSION, key, order_id))
    raw = payload + _tag(secret, context, payload)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(secret: bytes, context: bytes, text: str) -> Position:
    """The position a cursor holds; CursorError unless it was made by `encode_cursor` for `context`."""
    if not text or len(text) > MAX_CURSOR_CHARS:
        raise CursorError("is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise CursorError("is not a cursor of this API") from None
    # The decoder skips stray characters and padding and ignores a last character's unused bits:
    # only the spelling `encode_cursor` gives is a cursor, or an altered one would pass as it.
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != text.encode():
        raise CursorError("is not a cursor of this API")
    payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if len(raw) <= TAG_BYTES or not hmac.compare_digest(tag, _tag(secret, context, payload)):
        raise CursorError("was not issued for this query (tenant, filters and sort)")
    try:
        position = _decoder.decode(payload)
    except msgspec.DecodeError:
        raise CursorError("is not a cursor of this API") from None
    if position.version != VERSION:
        raise CursorError("is from another version of this API")
    return position
