"""The document cache and the projector's invalidation messages, without I/O."""

from __future__ import annotations

import json

from projections.fold import Plan
from projections.invalidation import MAX_PAYLOAD, messages, tenant_messages
from services.api.cache import ENTRY_OVERHEAD, DocumentCache

V2 = ("v2", ())
V1 = ("v1", ("items",))


def online(limit: int = 1 << 20) -> DocumentCache:
    cache = DocumentCache(limit)
    cache.go_online()
    return cache


def filled(cache: DocumentCache, tenant: str, order_id: int, doc: bytes, participant=None) -> bool:
    start = cache.begin()
    try:
        return cache.fill(start, tenant, order_id, V2, doc, participant)
    finally:
        cache.end(start)


def test_hit_after_fill_and_miss_before():
    cache = online()
    assert cache.get("acme", 1, V2) is None
    assert filled(cache, "acme", 1, b"{1}")
    assert cache.get("acme", 1, V2) == b"{1}"
    assert cache.get("acme", 1, V1) is None  # another variant is another document
    assert cache.get("globex", 1, V2) is None  # another tenant's order 1 is not this one
    assert (cache.hits, cache.misses) == (1, 3)


def test_offline_cache_neither_serves_nor_fills():
    cache = DocumentCache(1 << 20)
    assert cache.begin() is None
    assert not cache.fill(None, "acme", 1, V2, b"x", None)
    cache.go_online()
    assert filled(cache, "acme", 1, b"x")
    cache.go_offline()
    assert cache.size == 0 and len(cache) == 0 and cache.begin() is None


def test_order_invalidation_drops_every_variant_of_that_order_only():
    cache = online()
    for variant in (V1, V2):
        start = cache.begin()
        cache.fill(start, "acme", 1, variant, b"doc", None)
        cache.end(start)
    filled(cache, "acme", 2, b"two")
    filled(cache, "globex", 1, b"other tenant")
    cache.apply(json.dumps({"t": "acme", "o": [1], "p": []}))
    assert cache.get("acme", 1, V1) is None and cache.get("acme", 1, V2) is None
    assert cache.get("acme", 2, V2) == b"two"
    assert cache.get("globex", 1, V2) == b"other tenant"


def test_participant_invalidation_drops_the_orders_naming_it():
    cache = online()
    filled(cache, "acme", 1, b"names 7", participant=7)
    filled(cache, "acme", 2, b"names 8", participant=8)
    filled(cache, "globex", 3, b"globex names 7", participant=7)
    cache.apply(json.dumps({"t": "acme", "o": [], "p": [7]}))
    assert cache.get("acme", 1, V2) is None
    assert cache.get("acme", 2, V2) == b"names 8"
    assert cache.get("globex", 3, V2) == b"globex names 7"


def test_tenant_flush_and_flush_all():
    cache = online()
    filled(cache, "acme", 1, b"a")
    filled(cache, "globex", 1, b"g")
    cache.apply(json.dumps({"t": "acme"}))
    assert cache.get("acme", 1, V2) is None and cache.get("globex", 1, V2) == b"g"
    cache.apply("{}")
    assert cache.get("globex", 1, V2) is None and cache.size == 0


def test_a_malformed_message_empties_the_cache():
    cache = online()
    filled(cache, "acme", 1, b"a")
    cache.apply("not json")
    assert cache.get("acme", 1, V2) is None


def test_a_read_begun_before_an_invalidation_does_not_fill():
    cache = online()
    start = cache.begin()  # the read's snapshot may predate the commit below
    cache.apply(json.dumps({"t": "acme", "o": [1], "p": []}))
    assert not cache.fill(start, "acme", 1, V2, b"stale", None)
    cache.end(start)
    assert cache.get("acme", 1, V2) is None
    assert filled(cache, "acme", 1, b"fresh")  # a read begun after it fills


def test_a_read_begun_before_its_participant_changed_does_not_fill():
    cache = online()
    start = cache.begin()
    cache.apply(json.dumps({"t": "acme", "o": [], "p": [7]}))
    assert not cache.fill(start, "acme", 1, V2, b"old name", 7)
    assert cache.fill(start, "acme", 2, V2, b"other participant", 8)
    cache.end(start)


def test_a_read_begun_before_a_flush_or_an_outage_does_not_fill():
    cache = online()
    start = cache.begin()
    cache.apply(json.dumps({"t": "acme"}))
    assert not cache.fill(start, "acme", 1, V2, b"x", None)
    assert cache.fill(start, "globex", 1, V2, b"x", None)
    cache.end(start)
    start = cache.begin()
    cache.go_offline()
    cache.go_online()
    assert not cache.fill(start, "globex", 2, V2, b"x", None)
    cache.end(start)


def test_invalidations_of_other_orders_do_not_block_a_fill():
    cache = online()
    start = cache.begin()
    for order_id in range(2, 50):
        cache.apply(json.dumps({"t": "acme", "o": [order_id], "p": []}))
    assert cache.fill(start, "acme", 1, V2, b"one", None)
    cache.end(start)


def test_records_are_pruned_yet_a_stuck_read_never_fills_stale():
    cache = online()
    stuck = cache.begin()
    for order_id in range(30_000):
        cache.apply(json.dumps({"t": "acme", "o": [order_id], "p": []}))
    records = len(cache._changed_orders)  # noqa: SLF001 (the bound is what is tested)
    assert records <= 20_000
    assert not cache.fill(stuck, "acme", 5, V2, b"stale", None)
    cache.end(stuck)
    assert filled(cache, "acme", 5, b"fresh")
    cache.apply(json.dumps({"t": "acme", "o": [6], "p": []}))
    assert len(cache._changed_orders) == 0  # noqa: SLF001 (no read in flight: nothing kept)


def test_size_stays_within_the_limit_evicting_least_recently_used():
    doc = b"x" * 1000
    cache = online(limit=10 * (1100 + 2 * ENTRY_OVERHEAD))
    for order_id in range(100):
        filled(cache, "acme", order_id, doc)
        assert cache.size <= cache.limit
        cache.get("acme", 0, V2)  # order 0 stays the most recently used
    assert cache.get("acme", 0, V2) == doc
    assert cache.get("acme", 99, V2) == doc
    assert cache.get("acme", 50, V2) is None
    assert 5 <= len(cache) <= 10


def test_a_document_larger_than_the_cache_is_not_kept():
    cache = online(limit=1000)
    filled(cache, "acme", 1, b"x" * 5000)
    assert cache.size <= 1000 and cache.get("acme", 1, V2) is None


def filled_page(cache: DocumentCache, tenant: str, query: bytes, page: object, start=None) -> bool:
    begun = cache.begin() if start is None else start
    try:
        return cache.fill_page(begun, tenant, query, page, 100)
    finally:
        if start is None:
            cache.end(begun)


def test_a_page_is_kept_per_tenant_and_query():
    cache = online()
    assert cache.page("acme", b"q1") is None
    assert filled_page(cache, "acme", b"q1", "page one")
    assert cache.page("acme", b"q1") == "page one"
    assert cache.page("acme", b"q2") is None  # another filter, sort, limit or cursor
    assert cache.page("globex", b"q1") is None  # the same query of another tenant
    assert (cache.hits, cache.misses) == (1, 3)


def test_any_change_of_a_tenant_drops_its_pages_and_only_its_pages():
    cache = online()
    filled_page(cache, "acme", b"q1", "acme page")
    filled_page(cache, "globex", b"q1", "globex page")
    filled(cache, "acme", 1, b"one")
    # An order the page does not hold may still enter it: the tenant's pages go.
    cache.apply(json.dumps({"t": "acme", "o": [999], "p": []}))
    assert cache.page("acme", b"q1") is None
    assert cache.page("globex", b"q1") == "globex page"
    assert cache.get("acme", 1, V2) == b"one"  # a get of another order stays
    filled_page(cache, "acme", b"q1", "acme page")
    cache.apply(json.dumps({"t": "acme", "o": [], "p": [7]}))  # a participant renamed
    assert cache.page("acme", b"q1") is None
    filled_page(cache, "acme", b"q1", "acme page")
    cache.apply(json.dumps({}))  # everything (a rebuild's swap)
    assert cache.page("acme", b"q1") is None and cache.page("globex", b"q1") is None
    assert cache.size == 0 and len(cache) == 0


def test_a_page_read_begun_before_its_tenant_changed_does_not_fill():
    cache = online()
    start = cache.begin()
    cache.apply(json.dumps({"t": "acme", "o": [5], "p": []}))
    assert not filled_page(cache, "acme", b"q1", "stale", start)
    assert filled_page(cache, "globex", b"q1", "other tenant", start)
    cache.end(start)
    assert cache.page("acme", b"q1") is None
    assert filled_page(cache, "acme", b"q1", "fresh")


def test_pages_and_documents_share_the_bound():
    cache = online(limit=20 * (100 + 2 * ENTRY_OVERHEAD))
    for n in range(100):
        filled_page(cache, "acme", b"q%d" % n, n)
        filled(cache, "acme", n, b"x" * 50)
        assert cache.size <= cache.limit
    assert cache.page("acme", b"q99") == 99 and cache.page("acme", b"q0") is None
    cache.go_offline()
    assert cache.size == 0 and cache.page("acme", b"q99") is None


# ---- the projector's messages ------------------------------------------------------------------


def plan_of(orders: list[tuple[str, int]], participants: list[tuple[str, int]]) -> Plan:
    return Plan(orders=dict.fromkeys(orders), participants=dict.fromkeys(participants))  # type: ignore[arg-type]


def test_messages_name_each_tenants_orders_and_participants():
    plan = plan_of([("acme", 2), ("acme", 1), ("globex", 1)], [("acme", 9)])
    assert [json.loads(m) for m in messages(plan)] == [
        {"t": "acme", "o": [1, 2], "p": [9]},
        {"t": "globex", "o": [1], "p": []},
    ]
    assert messages(Plan()) == []


def test_large_batches_are_split_under_the_payload_limit_and_lose_nothing():
    orders = list(range(10**17, 10**17 + 1000))  # 18-digit ids: about 19 KB of them
    out = tenant_messages("acme", orders, [1, 2])
    assert len(out) > 1
    assert all(len(m.encode()) <= MAX_PAYLOAD for m in out)
    decoded = [json.loads(m) for m in out]
    assert sorted(i for m in decoded for i in m["o"]) == orders
    assert sorted(i for m in decoded for i in m["p"]) == [1, 2]


def test_a_batch_too_large_to_list_flushes_its_tenant():
    out = tenant_messages("acme", list(range(10**17, 10**17 + 10_000)), [])
    assert [json.loads(m) for m in out] == [{"t": "acme"}]
    assert tenant_messages("é" * 5000, [1], []) == ["{}"]  # a name near the limit: flush all
