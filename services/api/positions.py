"""The `X-Min-Position` request header, parsed: which stream entries a request must see applied.

`X-Min-Position: <stream key>@<entry id>[, <stream key>@<entry id>…]`, the stream key being what
precedes the last `@` and the entry id the one XADD returned (`<ms>-<seq>`, both decimal). Every
malformed form is an `InvalidParameter` naming the header (a 400 in either dialect): no `@`, an
empty key or id, an id that is not a full entry id (`1-x`, `1`, `-1`, `1-2-3`, values beyond 64
bits), a stream this service does not read, whitespace inside an element, an empty element, more
than `MAX_POSITIONS` elements. Whitespace around an element is allowed (HTTP list syntax); several
header lines are one list (HTTP's rule for repeated list headers). Several positions on one stream
mean the highest.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from services.api.queries import InvalidParameter

HEADER = "X-Min-Position"
_NAME = HEADER.lower().encode()
MAX_POSITIONS = 32
MAX_LENGTH = 8192  # characters of the whole header (all lines)
_U64 = 2**64 - 1
_OWS = " \t"
# No whitespace (str.isspace, as below), the key up to the last `@`, ASCII digits.
_WELL_FORMED = re.compile(r"(\S+)@([0-9]{1,20})-([0-9]{1,20})")

EntryId = tuple[int, int]
Positions = dict[str, EntryId]


def header_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """Every `X-Min-Position` line of raw ASGI headers joined as one list; None without one."""
    lines = [value for name, value in headers if name == _NAME]
    if not lines:
        return None
    return b",".join(lines)


def parse_entry_id(text: str) -> EntryId | None:
    """`<ms>-<seq>` as a pair of 64-bit unsigned integers, else None."""
    ms, sep, seq = text.partition("-")
    if not sep or not _digits(ms) or not _digits(seq):
        return None
    pair = (int(ms), int(seq))
    return pair if pair[0] <= _U64 and pair[1] <= _U64 else None


def _digits(text: str) -> bool:
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit()


def format_entry_id(entry: EntryId) -> str:
    return f"{entry[0]}-{entry[1]}"


def parse(raw: bytes, streams: Iterable[str]) -> Positions:
    """The positions a header asks for, by stream (the highest per stream)."""
    if len(raw) > MAX_LENGTH:
        raise _invalid(f"is longer than {MAX_LENGTH} characters")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise _invalid("is not UTF-8") from None
    known = frozenset(streams)
    elements = text.split(",")
    if len(elements) > MAX_POSITIONS:
        raise _invalid(f"names more than {MAX_POSITIONS} positions")
    positions: Positions = {}
    for element in elements:
        stream, entry = _element(element.strip(_OWS), known)
        if entry > positions.get(stream, (0, 0)):
            positions[stream] = entry
    return positions


def _element(element: str, known: frozenset[str]) -> tuple[str, EntryId]:
    match = _WELL_FORMED.fullmatch(element)  # the common case, in one step
    if match is not None and match[1] in known:
        entry = (int(match[2]), int(match[3]))
        if entry[0] <= _U64 and entry[1] <= _U64:
            return match[1], entry
    return _checked(element, known)


def _checked(element: str, known: frozenset[str]) -> tuple[str, EntryId]:
    """An element checked rule by rule: the one that fails names itself in the 400."""
    if not element:
        raise _invalid("has an empty element: expected `<stream key>@<entry id>`, comma-separated")
    if any(c.isspace() for c in element):
        raise _invalid("has whitespace inside an element: expected `<stream key>@<entry id>`")
    stream, sep, entry_text = element.rpartition("@")
    if not sep or not stream or not entry_text:
        raise _invalid(f"element {element[:100]!r} is not `<stream key>@<entry id>`")
    entry = parse_entry_id(entry_text)
    if entry is None:
        raise _invalid(
            f"entry id {entry_text[:100]!r} is not a stream entry id (`<ms>-<seq>`, as XADD returns)"
        )
    if stream not in known:
        raise _invalid(f"stream {stream[:100]!r} is not one this service reads")
    return stream, entry


def _invalid(message: str) -> InvalidParameter:
    return InvalidParameter(HEADER, message)
