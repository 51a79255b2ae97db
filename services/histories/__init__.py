"""The one generator of event histories: the demo of `orderview dev`, the tests and the benchmarks.

Seeded and pure (no I/O); every history follows events.md (per aggregate, seqs 1, 2, 3… without
gaps) until faults are added.

- `Workload` (workload.py): an endless stream of valid events, lives of orders with a weighted
  mix of steps, participants created and renamed (some after the orders naming them). Realistic
  by default: the benchmarks publish it (`shard` splits it by the sharding rule of events.md).
  With `variety`, values at the edges of the contract (edges.py) come now and then instead.
- `History` (history.py): a bounded slice of a workload as dicts, and its lines to publish. The
  demo of `orderview dev` (services/demo.py) is one; `varied` is the tests' configuration.
- `with_faults` (faults.py): one layer over any history: redeliveries, reorderings (gaps that
  fill) and poison; `poison_entries` are the entries a projector must dead-letter.
"""

from services.histories.faults import POISON_IDS, poison_entries, with_faults
from services.histories.history import History, varied
from services.histories.workload import (
    MIX,
    UNKNOWN_PARTICIPANT_TYPE,
    UNKNOWN_TYPE,
    Generated,
    Workload,
    shard,
)

__all__ = [
    "MIX",
    "POISON_IDS",
    "UNKNOWN_PARTICIPANT_TYPE",
    "UNKNOWN_TYPE",
    "Generated",
    "History",
    "Workload",
    "poison_entries",
    "shard",
    "varied",
    "with_faults",
]
