"""Prometheus metrics of the projector (served on its own port and beside the API's)."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPLIED = Counter(
    "orderview_events_applied_total", "Events whose effect was committed", ["stream"]
)
DUPLICATES = Counter(
    "orderview_events_duplicate_total",
    "Events ignored as duplicates (seq <= last applied)",
    ["stream"],
)
UNKNOWN_TYPES = Counter(
    "orderview_events_unknown_type_total",
    "Events of unknown order.*/participant.* types",
    ["stream"],
)
DEAD_LETTERS = Counter(
    "orderview_dead_letters_total", "Entries moved to the dead-letter stream", ["stream", "reason"]
)
GAPS_HELD = Gauge("orderview_gaps_held", "Events held waiting for a predecessor", ["stream"])
BATCH_SECONDS = Histogram(
    "orderview_batch_seconds",
    "Time to validate, apply, commit and acknowledge one batch",
    ["stream"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG = Gauge(
    "orderview_stream_lag", "Entries of the stream not yet delivered to the group", ["stream"]
)
PENDING = Gauge(
    "orderview_stream_pending", "Entries delivered to the group but not acknowledged", ["stream"]
)
RECLAIMED = Counter(
    "orderview_entries_reclaimed_total", "Entries reclaimed from idle consumers", ["stream"]
)
