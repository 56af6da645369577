"""The request budget of bench/kustomer_requests.py holds (a smaller run of the same script)."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "bench" / "kustomer_requests.py"

pytestmark = pytest.mark.slow


def test_three_surveys_on_one_connection_cost_what_the_api_allows():
    measure = runpy.run_path(str(BENCH))["measure"]
    result = measure(conversations=200, customers=60, ratings=10)
    # Every eligible ticket of every survey got its email, and every rating its write-back.
    assert result["sends"] == result["emails"] > result["conversations"]
    assert result["write_backs"] == 10
    assert result["searches"] <= math.ceil(result["conversations"] / 100) + 1
    assert result["customer_gets"] <= result["distinct_customers"]
    assert result["conversation_gets"] == math.ceil(result["sends"] / 100)
    assert result["write_back_requests"] == 2 * result["write_backs"]
    assert result["total"] <= 1.2 * result["lower_bound"]


def test_bench_script_prints_its_ratio_last():
    output = subprocess.run(
        [sys.executable, str(BENCH), "120", "30", "5"], capture_output=True, text=True, timeout=300
    )
    assert output.returncode == 0, output.stderr
    lines = output.stdout.strip().splitlines()
    assert "requests per write-back:   2.00 (lower bound 2: note + PATCH)" in lines
    assert any(line.startswith("API time at 300 requests/min:") for line in lines)
    ratio = float(lines[-1].split(":")[1].split()[0])
    assert lines[-1].startswith("requests / lower bound:") and ratio <= 1.2
