"""The X-Min-Position header: every well-formed list parsed, every malformed one a 400 naming it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.api.positions import HEADER, MAX_POSITIONS, header_value, parse, parse_entry_id
from services.api.queries import InvalidParameter

STREAMS = ("orders:events:0", "{orders:events:1}", "a@b")


def test_one_position():
    assert parse(b"orders:events:0@1700000000000-5", STREAMS) == {
        "orders:events:0": (1700000000000, 5)
    }


def test_the_stream_key_is_what_precedes_the_last_at():
    assert parse(b"a@b@7-0", STREAMS) == {"a@b": (7, 0)}


def test_several_positions_the_highest_per_stream_and_spaces_around_elements():
    raw = b"orders:events:0@5-1 ,\t{orders:events:1}@3-0, orders:events:0@5-0,orders:events:0@4-9"
    assert parse(raw, STREAMS) == {"orders:events:0": (5, 1), "{orders:events:1}": (3, 0)}


def test_64_bit_ids():
    top = 2**64 - 1
    assert parse(f"a@b@{top}-{top}".encode(), STREAMS) == {"a@b": (top, top)}


def test_several_header_lines_are_one_list():
    headers = [(b"x-min-position", b"a@b@1-0"), (b"host", b"x"), (b"x-min-position", b"a@b@2-0")]
    assert header_value(headers) == b"a@b@1-0,a@b@2-0"
    assert header_value([(b"host", b"x")]) is None


MALFORMED = [
    b"",  # empty
    b"   ",
    b"orders:events:0",  # no @
    b"orders:events:0-1-0",
    b"@1-0",  # no stream
    b"orders:events:0@",  # empty id
    b"orders:events:0@1-x",  # not an entry id
    b"orders:events:0@1",  # ms alone: ambiguous
    b"orders:events:0@-1",
    b"orders:events:0@1-",
    b"orders:events:0@1-2-3",
    b"orders:events:0@+1-0",
    b"orders:events:0@\xd9\xa1-0",  # a non-ASCII digit
    b"orders:events:0@1.5-0",
    b"orders:events:0@18446744073709551616-0",  # 2**64
    b"orders:events:0@1-18446744073709551616",
    b"orders:events:0@99999999999999999999999-0",
    b"unknown@1-0",  # a stream the service does not read
    b"orders:events:00@1-0",
    b"orders:events:0@1-0,unknown@1-0",
    b"orders :events:0@1-0",  # whitespace inside an element
    b"orders:events:0 @1-0",
    b"orders:events:0@ 1-0",
    b"orders:events:0@1 -0",
    b"orders:events:0@1-0\x0b",
    b"orders:events:0@1-0,",  # an empty element
    b",orders:events:0@1-0",
    b"orders:events:0@1-0,,orders:events:0@1-0",
    b"orders:events:0@1-0;orders:events:0@2-0",
    b"\xff\xfe@1-0",  # not UTF-8
    b",".join([b"orders:events:0@1-0"] * (MAX_POSITIONS + 1)),  # too many
    b"orders:events:0@1-0" + b" " * 9000,  # too long
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_is_invalid_parameter_naming_the_header(raw):
    with pytest.raises(InvalidParameter) as caught:
        parse(raw, STREAMS)
    assert caught.value.parameter == HEADER
    assert HEADER in str(caught.value)


def test_the_maximum_number_of_positions_is_accepted():
    raw = b",".join([b"orders:events:0@1-0"] * MAX_POSITIONS)
    assert parse(raw, STREAMS) == {"orders:events:0": (1, 0)}


@given(st.binary(max_size=300))
def test_any_bytes_parse_or_are_invalid_parameter(raw):
    try:
        positions = parse(raw, STREAMS)
    except InvalidParameter as exc:
        assert exc.parameter == HEADER
    else:
        assert positions and set(positions) <= set(STREAMS)


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_entry_ids_round_trip(ms, seq):
    assert parse_entry_id(f"{ms}-{seq}") == (ms, seq)
