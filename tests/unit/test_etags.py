"""Weak ETags and If-None-Match, without a network."""

from __future__ import annotations

import pytest

from services.api.etags import etag_of, none_match

TAG = etag_of([b'{"id":42}', b"cursor"])
OPAQUE = TAG.removeprefix("W/")


def test_an_etag_is_weak_quoted_and_depends_on_every_part_and_its_boundaries():
    assert TAG.startswith('W/"') and TAG.endswith('"')
    assert etag_of([b'{"id":42}', b"cursor"]) == TAG
    assert etag_of([b'{"id":43}', b"cursor"]) != TAG
    assert etag_of([b'{"id":42}', b"cursor", b""]) != TAG
    assert etag_of([b"ab", b"c"]) != etag_of([b"a", b"bc"])


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        pytest.param(None, False, id="no header"),
        pytest.param(TAG, True, id="the same weak tag"),
        pytest.param(OPAQUE, True, id="the strong form of the same tag (weak comparison)"),
        pytest.param("*", True, id="star"),
        pytest.param("  *  ", True, id="star with spaces"),
        pytest.param(f'W/"other", {TAG}', True, id="a list holding it"),
        pytest.param(f'"a",W/"b" ,  {OPAQUE}', True, id="a list with odd spacing"),
        pytest.param('W/"other"', False, id="another tag"),
        pytest.param('W/"other", "x"', False, id="a list without it"),
        pytest.param(OPAQUE[1:-1], False, id="unquoted: malformed"),
        pytest.param(f", {TAG},,", True, id="empty list members are ignored"),
        pytest.param(f"{TAG} junk", False, id="trailing junk: malformed"),
        pytest.param("", False, id="empty"),
        pytest.param("*, " + TAG, False, id="star inside a list: malformed"),
    ],
)
def test_if_none_match_uses_weak_comparison(header, matches):
    assert none_match(header, TAG) is matches
