"""The API process's cache of rendered orders, kept true by the projector's notifications. No I/O.

A get by id renders the order from its row; the cache keeps that rendering (not the envelope,
which holds the request id) under (tenant, order id, dialect, include), least recently used first
out once `limit` bytes are used. A list keeps its page (the rendered orders, the next cursor and
the page's tag) under (tenant, the whole validated query), in the same bound: a page may change
with any order of its tenant (one entering, leaving or moving in it cannot be told from a
notification), so every notification naming a tenant drops all of that tenant's pages. The projector's transactions tell what they change
(`projections.invalidation`); `listener.py` feeds that here (`apply`). The cache serves only while
that feed is known to be live (`online`): the moment it is lost, everything is dropped and every
request reads PostgreSQL until it listens again.

The fill race: a read that began before a commit may return the old row after that commit's
notification has been applied; storing it would keep a stale document until the next change.
Every notification advances `epoch` and records it against what it names; a read remembers the
epoch it began at (`begin`) and its fill is refused if anything it depends on (the order, its
participant, its tenant, or everything) was invalidated after that. A read that began after a
commit's notification arrived sees that commit (the notification is sent after the commit), and one
whose snapshot misses a commit begins before that commit's notification arrives: so a stored
document is never older than a notification received. The records are pruned below the oldest read
in flight. A request naming positions (`X-Min-Position`) uses the cache once every notification of
the commits that reached them has been applied: barrier.py.
"""

from __future__ import annotations

import sys
from collections import Counter, OrderedDict

import msgspec

# What the bookkeeping costs beyond a document's bytes, counted once per order and once per
# document: measured with tracemalloc on CPython 3.11, ~580 bytes for an order with one document
# and ~200 per further one (accounted: 800 and 400), so `size` overstates the memory used.
ENTRY_OVERHEAD = 400
MAX_RECORDS = 20_000  # invalidation records kept for reads in flight, before a floor is raised

Variant = tuple[str, tuple[str, ...]]  # (dialect, include)
Key = tuple[str, int]  # (tenant, order id) or (tenant, participant id)
PageKey = tuple[str, bytes]  # (tenant, the list query encoded)


class Message(msgspec.Struct, frozen=True):
    """A notification (see `projections.invalidation`)."""

    t: str | None = None
    o: list[int] | None = None
    p: list[int] | None = None


_decoder = msgspec.json.Decoder(Message)


class _Page:
    """A cached list page: what `value` holds is the caller's (see `read.Page`)."""

    __slots__ = ("value", "size")
    participant = None

    def __init__(self, value: object, size: int) -> None:
        self.value = value
        self.size = size


class _Order:
    __slots__ = ("participant", "variants", "size")

    def __init__(self, participant: int | None) -> None:
        self.participant = participant
        self.variants: dict[Variant, bytes] = {}
        self.size = 0


class DocumentCache:
    """Rendered orders by (tenant, order id), bounded by `limit` bytes (documents plus overhead)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.online = False
        self.hits = 0
        self.misses = 0
        self.counted = (0, 0)  # hits and misses already added to the Prometheus counters
        self.epoch = 0
        self._floor = 1  # reads that began below it may not fill (set when going online)
        # Orders under (tenant, id), pages under (tenant, query bytes): one LRU, one bound.
        self._orders: OrderedDict[Key | PageKey, _Order | _Page] = OrderedDict()
        self._pages_of: dict[str, set[PageKey]] = {}
        self._by_participant: dict[Key, set[int]] = {}
        self._changed_orders: dict[Key, int] = {}
        self._changed_participants: dict[Key, int] = {}
        self._changed_tenants: dict[str, int] = {}
        self._changed_pages: dict[str, int] = {}  # any change of the tenant
        self._inflight: Counter[int] = Counter()

    def __len__(self) -> int:
        return sum(len(o.variants) if isinstance(o, _Order) else 1 for o in self._orders.values())

    # ---- reads --------------------------------------------------------------------------------

    def get(self, tenant: str, order_id: int, variant: Variant) -> bytes | None:
        """The cached rendering, or None (counted as a miss)."""
        key = (tenant, order_id)
        order = self._orders.get(key)
        doc = order.variants.get(variant) if order is not None else None
        if doc is None:
            self.misses += 1
            return None
        self._orders.move_to_end(key)
        self.hits += 1
        return doc

    def page(self, tenant: str, query: bytes) -> object | None:
        """The cached page of this list query, or None (counted as a miss)."""
        key = (tenant, query)
        entry = self._orders.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._orders.move_to_end(key)
        self.hits += 1
        return entry.value  # type: ignore[union-attr]

    def fill_page(
        self, start: int | None, tenant: str, query: bytes, value: object, size: int
    ) -> bool:
        """Store a page a read that began at `start` made (`size`: its bytes), unless its tenant
        changed since (or the cache went offline). Whether it was stored."""
        if start is None or not self.online or start < self._floor:
            return False
        if max(self._changed_pages.get(tenant, -1), self._changed_tenants.get(tenant, -1)) > start:
            return False
        key = (tenant, query)
        self._drop(key)
        entry = self._orders[key] = _Page(value, size + sys.getsizeof(query) + ENTRY_OVERHEAD)
        self._pages_of.setdefault(tenant, set()).add(key)
        self.size += entry.size
        self._evict()
        return True

    def begin(self) -> int | None:
        """A read starts: its epoch, to give to `fill` and `end`; None while offline."""
        if not self.online:
            return None
        self._inflight[self.epoch] += 1
        return self.epoch

    def end(self, start: int | None) -> None:
        """A read that began at `start` is over (filled or not)."""
        if start is not None:
            self._inflight[start] -= 1
            if not self._inflight[start]:
                del self._inflight[start]

    def fill(
        self, start: int | None, tenant: str, order_id: int, variant: Variant, doc: bytes,
        participant: int | None,
    ) -> bool:  # fmt: skip
        """Store what a read that began at `start` rendered, unless something it depends on was
        invalidated since (or the cache went offline). Whether it was stored."""
        if start is None or not self.online or start < self._floor:
            return False
        key = (tenant, order_id)
        if (
            self._changed_orders.get(key, -1) > start
            or self._changed_tenants.get(tenant, -1) > start
            or (
                participant is not None
                and self._changed_participants.get((tenant, participant), -1) > start
            )
        ):
            return False
        order = self._orders.get(key)  # type: ignore[assignment]
        if order is not None and order.participant != participant:
            self._drop(key)
            order = None
        if order is None:
            order = self._orders[key] = _Order(participant)
            order.size = ENTRY_OVERHEAD
            self.size += ENTRY_OVERHEAD
            if participant is not None:
                self._by_participant.setdefault((tenant, participant), set()).add(order_id)
        else:
            self._orders.move_to_end(key)
        old = order.variants.get(variant)
        grow = (
            sys.getsizeof(doc)
            + ENTRY_OVERHEAD
            - (sys.getsizeof(old) + ENTRY_OVERHEAD if old is not None else 0)
        )
        order.variants[variant] = doc
        order.size += grow
        self.size += grow
        self._evict()
        return True

    def _evict(self) -> None:
        while self.size > self.limit and self._orders:
            self._drop(next(iter(self._orders)))

    # ---- invalidation -------------------------------------------------------------------------

    def apply(self, payload: str) -> None:
        """Apply one notification (a malformed one empties the cache: it may have named anything)."""
        try:
            message = _decoder.decode(payload)
        except msgspec.DecodeError:
            message = Message()
        self.epoch += 1
        epoch = self.epoch
        tenant = message.t
        if tenant is None:
            self.clear()
            return
        self._changed_pages[tenant] = epoch
        for key in list(self._pages_of.get(tenant, ())):
            self._drop(key)
        if message.o is None and message.p is None:
            self._changed_tenants[tenant] = epoch
            for key in [k for k in self._orders if k[0] == tenant]:
                self._drop(key)
        else:
            for order_id in message.o or ():
                self._changed_orders[(tenant, order_id)] = epoch
                self._drop((tenant, order_id))
            for participant in message.p or ():
                self._changed_participants[(tenant, participant)] = epoch
                for order_id in list(self._by_participant.get((tenant, participant), ())):
                    self._drop((tenant, order_id))
        self._prune()

    def clear(self) -> None:
        """Drop everything; reads in flight may not fill."""
        self._orders.clear()
        self._pages_of.clear()
        self._by_participant.clear()
        self.size = 0
        self.epoch += 1
        self._floor = self.epoch
        self._forget()

    def go_online(self) -> None:
        """The notifications are being received (from now on): serve and fill again."""
        self.clear()
        self.online = True

    def go_offline(self) -> None:
        """Notifications may be missed from now on: drop everything, serve nothing."""
        self.online = False
        self.clear()

    def _drop(self, key: Key | PageKey) -> None:
        order = self._orders.pop(key, None)
        if order is None:
            return
        self.size -= order.size
        if isinstance(order, _Page):
            pages = self._pages_of[key[0]]
            pages.discard(key)  # type: ignore[arg-type]
            if not pages:
                del self._pages_of[key[0]]
            return
        if order.participant is not None:
            named = self._by_participant.get((key[0], order.participant))
            if named is not None:
                named.discard(key[1])
                if not named:
                    del self._by_participant[(key[0], order.participant)]

    def _prune(self) -> None:
        """Forget invalidations no read in flight can be affected by."""
        changes = self._changes()
        records = sum(map(len, changes))
        if not self._inflight:
            self._forget()
            return
        if records <= MAX_RECORDS:
            return
        oldest = min(self._inflight)
        for changed in changes:
            for key in [k for k, e in changed.items() if e <= oldest]:
                del changed[key]
        if (
            sum(map(len, changes)) > MAX_RECORDS
        ):  # a read stuck in flight: reads begun so far may not fill
            self.epoch += 1
            self._floor = self.epoch
            self._forget()

    def _changes(self) -> tuple[dict, ...]:
        return (
            self._changed_orders,
            self._changed_participants,
            self._changed_tenants,
            self._changed_pages,
        )

    def _forget(self) -> None:
        for changed in self._changes():
            changed.clear()
