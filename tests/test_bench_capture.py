"""The rating capture benchmark on a tiny size: the hub, the hand-written route and the
hello-world route each answer every request as they should under wrk, and every
answered POST recorded exactly one rating (no wall-clock limits: the machine may be
busy, so only the counts are checked)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.conftest import postgres_url

pytestmark = pytest.mark.slow

#: app, kind, requests/s, p50 ms, p99 ms, CPU ms per request of the app and its database.
ROW = re.compile(
    r"(hello|floor|hub) +(GET|GET first view|POST) +([0-9]+) +([0-9.]+) +([0-9.]+)"
    r" +([0-9.]+) +([0-9.]+)"
)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)")
def test_capture_rps_runs_and_every_request_succeeds(subprocess_env):
    subprocess_env["DATABASE_URL"] = postgres_url()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "capture_rps.py"), "1", "1"],
        cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    rows = {(m.group(1), m.group(2)): m for line in lines if (m := ROW.fullmatch(line))}
    expected = {(app, kind) for app in ("hello", "floor", "hub") for kind in ("GET", "POST")}
    assert expected | {("hub", "GET first view")} == set(rows), lines
    for match in rows.values():
        assert float(match.group(3)) > 0, match.group(0)
        assert float(match.group(4)) <= float(match.group(5)), match.group(0)  # p50 <= p99
        assert float(match.group(6)) > 0, match.group(0)  # the workers' CPU was counted

    checked = {line.split(":")[0].removeprefix("checked "): line for line in lines}
    for app in ("hello", "floor", "hub"):
        assert re.fullmatch(rf"checked {app} GET: [1-9][0-9]* x 200", checked[f"{app} GET"])
    assert re.fullmatch(r"checked hello POST: [1-9][0-9]* x 200", checked["hello POST"])
    # Each 303's delivery has its rating; a POST cut off when wrk stopped may add one
    # (the script fails when any answered POST recorded none, or recorded twice).
    for app in ("floor", "hub"):
        line = checked[f"{app} POST"]
        found = re.fullmatch(
            rf"checked {app} POST: ([1-9][0-9]*) x 303, ([0-9]+) ratings "
            r"\(([0-9]+) by requests cut off at the end\)",
            line,
        )
        assert found, line
        answered, ratings, extra = map(int, found.groups())
        assert ratings == answered + extra, line
    first = re.fullmatch(
        r"checked hub GET first view: ([1-9][0-9]*) x 200, ([0-9]+) deliveries opened "
        r"\(([0-9]+) by requests cut off at the end\)",
        checked["hub GET first view"],
    )
    assert first and int(first.group(2)) == int(first.group(1)) + int(first.group(3)), lines
    assert re.fullmatch(r"GET: hub/hand-written [0-9.]+ \(goal >= 0.9\), .*", lines[-6]), lines
    assert re.fullmatch(r"POST: hub/hand-written [0-9.]+ \(goal >= 0.9\), .*", lines[-5]), lines
    assert re.fullmatch(r"ratio [0-9]+\.[0-9]+", lines[-1]), lines
