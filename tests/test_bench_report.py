"""The report and stats benchmark on a small size: it runs as documented, and the hub's
pages and API show exactly the numbers of the hand-written SQL in every case (the clock
is not checked: the machine may be busy)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.conftest import postgres_url

sys.path.insert(0, str(ROOT / "bench"))

from report_stats import Case  # noqa: E402
from report_stats import Numbers  # noqa: E402
from report_stats import check_api  # noqa: E402
from report_stats import overall  # noqa: E402
from report_stats import score  # noqa: E402

CASE = re.compile(
    r"(?P<name>.+): hub \d+ ms, hand-written SQL \d+ ms \((?P<form>[a-z, ]+)\), "
    r"ratio [0-9.]+ \(numbers agree: (?P<compared>\d+) compared\)"
)


@pytest.mark.slow
def test_the_report_benchmark_runs_and_the_numbers_agree(subprocess_env):
    subprocess_env["DATABASE_URL"] = postgres_url()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report_stats.py"), "4000", "1"],
        cwd=ROOT, env=subprocess_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"loaded 4000 ratings and 8000 deliveries in [0-9.]+ s", lines[0]), lines
    cases = [match for line in lines if (match := CASE.fullmatch(line))]
    assert [case["name"].split(",")[0] for case in cases] == [
        "survey report",
        "metric report",
        "survey report",
        "stats API",
        "stats API",
    ], lines
    # Each case compared hundreds of numbers: scores, margins, groups, trend buckets,
    # agents, surveys, the response rate, the comments and the funnel.
    assert all(int(case["compared"]) >= 100 for case in cases), lines
    assert sum(line.startswith("  warm-up, the hand-written forms in ms: ") for line in lines) == 5
    assert re.fullmatch(r"ratio [0-9]+\.[0-9]+", lines[-1]), lines


def test_the_agreement_check_notices_a_difference():
    """The check the benchmark relies on fails when a number differs."""
    numbers = Numbers(sent=10, rated=7)
    numbers.values[11] = {10: 4, 9: 1, 7: 1, 3: 1}
    case = Case("stats", "/api/v1/stats?metric=nps", "nps", None, None, None, page=False)
    surveys = {1: ("NPS", "nps", 11, True)}

    def body():
        return {
            "scores": [{"scale": 11, **score("nps", overall(numbers, "nps", 11))}],
            "series": [],
            "response_rate": {"sent": 10, "rated": 7, "rate": 70.0},
            "funnel": None,
        }

    assert check_api(body(), numbers, case, surveys) > 0
    for change in (
        lambda b: b["scores"][0].update(n=8),
        lambda b: b["scores"][0].update(value=b["scores"][0]["value"] + 1e-6),
        lambda b: b["scores"][0]["groups"].update(promoter=4),
        lambda b: b["response_rate"].update(rated=6),
    ):
        changed = body()
        change(changed)
        with pytest.raises(AssertionError):
            check_api(changed, numbers, case, surveys)
