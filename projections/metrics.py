"""Prometheus metrics of the projector (served on its own port and beside the API's)."""

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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


class LedgerCollector(Collector):
    """Dead letters by stream and reason, from the ledger (`orderview.dead_letters`): waiting
    (neither replayed nor dropped), replayed and dropped. Every projector exports the same
    counts, refreshed every 30 s: aggregate them with max, not sum."""

    REASONS = ("gap", "poison", "could not be applied", "refused by database")

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, tuple[int, int, int]]] = {}

    def update(self, stream: str, by_reason: dict[str, tuple[int, int, int]]) -> None:
        self.counts[stream] = by_reason

    def collect(self):
        families = (
            GaugeMetricFamily(
                "orderview_dead_letters_waiting",
                "Dead letters neither replayed nor dropped, from the ledger",
                labels=["stream", "reason"],
            ),
            CounterMetricFamily(
                "orderview_dead_letters_replayed",
                "Dead letters appended again by `orderview dlq replay`, from the ledger",
                labels=["stream", "reason"],
            ),
            CounterMetricFamily(
                "orderview_dead_letters_dropped",
                "Dead letters discarded by `orderview dlq drop`, from the ledger",
                labels=["stream", "reason"],
            ),
        )
        for stream, by_reason in self.counts.items():
            for reason in self.REASONS:
                values = by_reason.get(reason, (0, 0, 0))
                for family, value in zip(families, values, strict=True):
                    family.add_metric([stream, reason], value)
        yield from families


LEDGER = LedgerCollector()
REGISTRY.register(LEDGER)
READ_MODEL_OUTDATED = Gauge(
    "orderview_read_model_outdated",
    "1 when the read model was built by a release whose schema or rendering differs from this one",
)
