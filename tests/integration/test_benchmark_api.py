"""`benchmarks/api.py` end to end on a small database: every target answers, the report is whole.

The peer (Platformatic DB) is left out: its first run installs Node and Platformatic from npm,
minutes of download; `check_same` covers it in every real run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("wrk") is None or shutil.which("pgbench") is None,
        reason="needs wrk and pgbench (apt-get install wrk postgresql-client)",
    ),
]


def test_one_command_measures_every_target_and_judges_the_targets(servers) -> None:
    env = os.environ | {
        "ORDERVIEW_BENCH_ADMIN_URL": servers[0],
        "ORDERVIEW_BENCH_REDIS_URL": servers[1],
    }
    run = subprocess.run(
        [sys.executable, "benchmarks/api.py", "--orders", "3000", "--seconds", "1",
         "--rounds", "1", "--targets", "api,bare,floor,pgbench,ceiling"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = run.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.search(r"^CPU: .+; cores: \d+; RAM: \d+ MiB", out, re.M)
    assert re.search(r"^PostgreSQL \S+.*; Redis \S+; load average at start [\d.]+", out, re.M)
    assert "checked: api, bare, floor, ceiling answer the same documents to each scenario" in out
    for kind in ("api", "bare", "floor", "pgbench", "ceiling"):
        for scenario in ("get", "list", "deep"):
            row = re.search(rf"^{kind}\s+{scenario}\s+(\d+) .*\s(\d+)$", out, re.M)
            assert row, f"no {kind} {scenario} row in:\n{out}"
            assert int(row[1]) > 0 and row[2] == "0", row[0]  # req/s, errors
    for scenario in ("get", "list"):
        assert re.search(rf"^  {scenario} ≥ 1.0 × bare: [\d.]+ .*→ (met|NOT met)$", out, re.M)
        assert f"  {scenario} ≥ 2.0 × peer: not measured" in out
    assert re.search(
        r"^  bound: p99 of the floor app get [\d.]+, list [\d.]+, deep [\d.]+ ms", out, re.M
    )
    assert re.search(r"^getpos: X-Min-Position: \S+@\d+-\d+ \(settled\)$", out, re.M)
    assert "checked: a get naming " in out
    row = re.search(r"^api\s+getpos\s+(\d+) .*\s(\d+)$", out, re.M)
    assert row and int(row[1]) > 0 and row[2] == "0", out  # answered, none a 503
    assert re.search(
        r"^  X-Min-Position ≤ 10% extra: getpos/get req/s [\d.]+ .*, [+-][\d.]+% per request → ",
        out,
        re.M,
    )
    assert re.search(
        r"^  p99 ≤ 20 ms: get [\d.]+, getpos [\d.]+, list [\d.]+, deep [\d.]+ ms → ", out, re.M
    )
    assert re.search(r"^  RSS ≤ 150 MB: \d+ MiB \(\d+ MB\) → (met|NOT met)$", out, re.M)
    assert re.search(r"^dropped database orderview_bench_\w+$", out, re.M)
