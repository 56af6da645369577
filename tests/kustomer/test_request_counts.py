"""The request budget of bench/kustomer_requests.py holds (a smaller run of the same script)."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys

from tests.conftest import ROOT

BENCH = ROOT / "bench" / "kustomer_requests.py"


def test_scan_and_write_back_stay_within_their_request_budget():
    measure = runpy.run_path(str(BENCH))["measure"]
    result = measure(conversations=250, customers=30)
    assert result["search_requests"] == math.ceil(result["conversations"] / 100)
    assert result["customer_requests"] <= result["distinct_customers"]
    assert result["write_back_requests"] == 2


def test_bench_script_prints_its_ratios():
    output = subprocess.run(
        [sys.executable, str(BENCH), "120", "10"], capture_output=True, text=True, timeout=120
    )
    assert output.returncode == 0, output.stderr
    assert "search requests:         2 (budget ceil(N/100) = 2; ratio 1.00)" in output.stdout
    assert "write-back requests:     2 (budget 2: note + PATCH)" in output.stdout
