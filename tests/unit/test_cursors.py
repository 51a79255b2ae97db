"""Cursors: opaque, signed, bound to the query context; anything else is refused."""

from __future__ import annotations

import pytest

from services.api.cursors import CursorError, decode_cursor, encode_cursor

SECRET = b"unit-test-secret-0123456789"


@pytest.mark.parametrize(
    "key",
    [pytest.param("SO-1", id="text"), pytest.param(1704067200000000, id="timestamp"),
     pytest.param("81.56", id="numeric"), pytest.param(None, id="null-section"),
     pytest.param("é☕", id="unicode")],
)  # fmt: skip
def test_a_cursor_round_trips_its_position(key):
    cursor = encode_cursor(SECRET, b"ctx", key, 42)

    position = decode_cursor(SECRET, b"ctx", cursor)

    assert (position.key, position.id) == (key, 42)
    assert cursor.isascii() and "=" not in cursor


@pytest.mark.parametrize(
    ("secret", "context"),
    [pytest.param(b"another-secret-0123456789", b"ctx", id="other-secret"),
     pytest.param(SECRET, b"ctx2", id="other-context")],
)  # fmt: skip
def test_a_cursor_fails_under_another_secret_or_context(secret, context):
    cursor = encode_cursor(SECRET, b"ctx", "SO-1", 1)

    with pytest.raises(CursorError):
        decode_cursor(secret, context, cursor)


@pytest.mark.parametrize(
    "text",
    ["", "a", "!!!!", "A" * 2000, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "\x00", "é"],
)
def test_garbage_is_refused(text):
    with pytest.raises(CursorError):
        decode_cursor(SECRET, b"ctx", text)


def test_every_single_character_change_is_refused():
    cursor = encode_cursor(SECRET, b"ctx", "SO-1", 7)
    for i, c in enumerate(cursor):
        bad = cursor[:i] + ("B" if c != "B" else "C") + cursor[i + 1 :]
        with pytest.raises(CursorError):
            decode_cursor(SECRET, b"ctx", bad)
