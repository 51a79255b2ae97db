"""Watermarks of services/api/freshness.py without a network: settled, replayed, visible."""

from __future__ import annotations

import pytest
import redis.asyncio as redis

from services.api.freshness import Freshness, PositionNotReached, _watermark

S = "orders:events"


def fresh() -> Freshness:
    return Freshness(None, [S, "other"], "orderview", wait_seconds=0.05)


def test_the_watermark_is_the_last_delivered_id_without_pending_entries():
    groups = [{"name": b"orderview", "last-delivered-id": b"10-3"}, {"name": b"x"}]
    assert _watermark(groups, {"pending": 0, "min": None}, "orderview") == (10, 3)


@pytest.mark.parametrize(
    ("smallest", "expected"), [(b"7-2", (7, 1)), (b"7-0", (6, 2**64 - 1)), (b"0-1", (0, 0))]
)
def test_the_smallest_pending_entry_holds_the_watermark_below_it(smallest, expected):
    groups = [{"name": b"orderview", "last-delivered-id": b"10-3"}]
    assert _watermark(groups, {"pending": 2, "min": smallest}, "orderview") == expected


def test_no_group_or_no_stream_means_nothing_settled():
    assert _watermark(
        [{"name": b"someone-else", "last-delivered-id": b"9-0"}], {}, "orderview"
    ) == (0, 0)
    no_stream = redis.ResponseError("no such key")
    assert _watermark(no_stream, no_stream, "orderview") == (0, 0)


def test_a_connection_error_is_returned_to_be_raised_not_taken_for_nothing():
    lost = redis.ConnectionError("lost")
    assert _watermark(lost, {}, "orderview") is lost


def test_watermarks_only_move_forward():
    marks = fresh()
    marks.settle(S, (5, 0), None)
    marks.settle(S, (3, 0), None)
    assert marks.covered({S: (5, 0)})
    assert not marks.covered({S: (5, 1)})
    assert not marks.covered({"other": (1, 0)})


def test_with_a_replica_a_settled_entry_is_visible_once_replayed():
    marks = fresh()
    marks.settle(S, (5, 0), lsn=100)
    marks.settle(S, (8, 0), lsn=200)
    assert not marks.covered({S: (1, 0)})
    marks.replayed(150)
    assert marks.covered({S: (5, 0)}) and not marks.covered({S: (6, 0)})
    marks.replayed(200)
    assert marks.covered({S: (8, 0)})
    marks.settle(S, (9, 0), lsn=180)  # already replayed past it: visible at once
    assert marks.covered({S: (9, 0)})


async def test_without_redis_an_uncovered_position_is_not_reached_at_once():
    marks = fresh()
    with pytest.raises(PositionNotReached):
        await marks.wait({S: (1, 0)})
    await marks.wait({S: (0, 0)})  # nothing to wait for
