"""The one generator of event histories: the demo of `orderview dev`, the tests and the benchmarks.

Seeded and pure (no I/O); every history follows events.md (per aggregate, seqs 1, 2, 3… without
gaps) until faults are asked for.

- `Workload` (realistic.py): an endless, realistic stream, lives of orders with a weighted mix of
  steps, participants created and renamed (some after the orders naming them). The benchmarks
  publish it (`shard` splits it by the sharding rule of events.md); the demo of `orderview dev`
  (services/demo.py) is a bounded slice of it with duplicates and poison added.
- `generate`, `generate_varied` (interleaved.py): random histories that reach every corner of
  the vocabulary, for the tests' independent model.
- `with_faults`, `redeliver`, `POISON_LINES`, `poison_entries` (faults.py): duplicates,
  same-aggregate reordering and poison on demand.
"""

from services.histories.faults import POISON_LINES, poison_entries, redeliver, with_faults
from services.histories.interleaved import History, generate, generate_varied
from services.histories.realistic import MIX, UNKNOWN_TYPE, Generated, Workload, shard

__all__ = [
    "MIX",
    "UNKNOWN_TYPE",
    "POISON_LINES",
    "Generated",
    "History",
    "Workload",
    "generate",
    "generate_varied",
    "poison_entries",
    "redeliver",
    "shard",
    "with_faults",
]
