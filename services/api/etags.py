"""Weak ETags of answers and the If-None-Match check (RFC 9110, weak comparison)."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

# One member of an If-None-Match list: empty members first (RFC 9110 5.6.1.2 says to ignore
# them), then optional W/ and a quoted opaque tag of visible characters other than `"`.
_TAG = re.compile(r'[\s,]*(?:W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,[\s,]*|$)')


def etag_of(parts: Iterable[bytes]) -> str:
    """A weak ETag of everything in a body but the request id: equal parts, equal tag."""
    digest = hashlib.blake2b(digest_size=15)
    for part in parts:
        digest.update(len(part).to_bytes(4, "little"))  # ["ab", "c"] and ["a", "bc"] differ
        digest.update(part)
    return f'W/"{base64.urlsafe_b64encode(digest.digest()).decode()}"'


def none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match: header` matches `etag` (so the answer is a 304).

    `*` matches any current representation; a list matches when one of its tags has the same
    opaque tag, weak or not. A malformed header matches nothing: the full answer is sent."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")[1:-1]
    tags, pos, header = [], 0, header.strip()
    while pos < len(header):
        found = _TAG.match(header, pos)
        if found is None:
            return False
        tags.append(found.group(1))
        pos = found.end()
    return opaque in tags
