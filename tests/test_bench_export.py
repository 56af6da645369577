"""The export memory benchmark on 50,000 ratings: it runs as documented and the web
worker's memory stays within the budget while it streams."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.conftest import postgres_url


@pytest.mark.slow
def test_a_streamed_export_stays_within_the_memory_budget(subprocess_env):
    subprocess_env["DATABASE_URL"] = postgres_url()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "export_memory.py"), "50000"],
        cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"ndjson: 50000 lines in .*", lines[1]), lines
    assert re.fullmatch(r"csv: 50001 lines in .*", lines[2]), lines  # with the header
    growth = float(re.fullmatch(r"growth \+([0-9.]+) MiB, budget 50 MiB", lines[-2]).group(1))
    ratio = float(re.fullmatch(r"ratio ([0-9.]+)", lines[-1]).group(1))
    assert ratio < 1, run.stdout
    # 50,000 rows buffered (no server-side cursor) would take tens of MiB; streamed, a few.
    assert growth < 10, run.stdout
