"""The pipeline benchmarks on small sizes: each runs as documented, prints a parseable
ratio as its last line, and its counts hold (no wall-clock limits: the machine may be busy).
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import pytest

from tests.conftest import ROOT
from tests.conftest import postgres_url

sys.path.insert(0, str(ROOT / "bench"))

from _sandbox import make_sandbox  # noqa: E402

from surveyhub_kustomer.connector import iso  # noqa: E402


def bench(name: str, env: dict, *args: str, timeout: int = 900) -> list[str]:
    env["DATABASE_URL"] = postgres_url()
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio -?[0-9]+\.[0-9]+", lines[-1]), lines  # below idle: negative
    return lines


def line(lines: list[str], prefix: str) -> str:
    return next(x for x in lines if x.startswith(prefix))


def test_the_fast_search_answers_as_the_sandbox_does():
    # One clock for both: built a second apart on a busy machine, their timestamps
    # differed by that second.
    now = datetime.now(UTC).replace(microsecond=0)
    app, seeded, _customers, _open = make_sandbox(450, fast_search=True, now=now)
    own, _, _, _ = make_sandbox(450, now=now)
    headers = {"Authorization": f"Bearer {seeded.api_key}"}
    conversations = list(seeded.org.conversations.values())
    middle = sorted(c["attributes"]["updatedAt"] for c in conversations)[200]
    window = [
        {"conversation_last_done_created_at": {"gte": iso(now - timedelta(days=20))}},
        {"conversation_last_done_created_at": {"lte": iso(now - timedelta(hours=48))}},
    ]
    for criteria in (window, [*window, {"conversation_updated_at": {"gte": middle}}]):
        body = {
            "queryContext": "conversation",
            "and": criteria,
            "sort": [{"conversation_updated_at": "asc"}],
        }
        for page in (1, 2, 4):
            url = f"/v1/customers/search?page={page}&pageSize=100"
            fast = app.test_client().post(url, json=body, headers=headers).json
            slow = own.test_client().post(url, json=body, headers=headers).json
            assert [c["id"] for c in fast["data"]] == [c["id"] for c in slow["data"]]
            assert fast["data"] == slow["data"]
            assert bool(fast["links"]["next"]) == bool(slow["links"]["next"])


@pytest.mark.slow
def test_scan_send_runs_and_its_request_counts_hold(subprocess_env):
    lines = bench("scan_send.py", subprocess_env, "300", "5")
    emails = re.fullmatch(r"emails: hub (\d+) \(sink got (\d+)\), baseline (\d+)", lines[2])
    assert emails and len(set(emails.groups())) == 1, lines
    assert int(emails.group(1)) >= 300
    scan = float(
        re.search(r"ratio ([0-9.]+) \(goal <= 1.05\)", line(lines, "scan requests")).group(1)
    )
    assert scan <= 1.05, lines
    per = line(lines, "requests per rating written back: ")
    assert per.startswith("requests per rating written back: 2.00 (5 written back, 0 other"), per
    assert float(lines[-1].split()[1]) > 0


@pytest.mark.slow
def test_scan_memory_runs_and_decides_every_conversation(subprocess_env):
    lines = bench("scan_memory.py", subprocess_env, "600")
    scanned = re.match(r"scan of (\d+) conversations: JobStatus.FINISHED in", lines[0])
    assert scanned and int(scanned.group(1)) >= 600, lines
    assert re.fullmatch(r"growth \+-?[0-9.]+ MiB, budget 100 MiB", lines[-2]), lines


@pytest.mark.slow
def test_eligible_to_sent_runs_with_webhooks_and_with_polling(subprocess_env):
    lines = bench("eligible_to_sent.py", subprocess_env, "10", "1")
    hooked = re.fullmatch(r"webhooks: worst ([0-9.]+) s, goal 60 s, ratio [0-9.]+", lines[1])
    polled = re.fullmatch(r"polling: worst ([0-9.]+) s, goal 70 s .*", lines[3])
    assert hooked and polled, lines
    assert float(hooked.group(1)) > 0 and float(polled.group(1)) > 0
