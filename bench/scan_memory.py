"""Peak memory of a scan of many conversations, against an idle worker process.

Run: .venv/bin/python bench/scan_memory.py [conversations]   (default 100,000)

The Kustomer sandbox (its own process, indexed search) holds `conversations` resolved
email conversations (about 0.7 x as many distinct customers). A `surveyhub worker
--queue scans` process starts on a fresh PostgreSQL schema and a private redis-server
and is measured idle; then a CSAT survey is activated with a 30-day look-back, which
queues one scan of the connection. The worker forks its work horse for the job (as in
production) and the horse's resident memory is sampled every 20 ms until the scan ends
(its sends stay queued: no worker serves `sends` here). Prints the idle RSS, the RSS
after each tenth of the tickets, the peak, and as the last line the growth against the
100 MiB budget (goal: ratio < 1). A run of fewer than 100,000 conversations extrapolates
its growth to 100,000 linearly from the slope of its last 30 % and says so.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB  # noqa: E402
from _common import ROOT  # noqa: E402
from _common import add_survey  # noqa: E402
from _common import hub_env  # noqa: E402
from _common import make_app  # noqa: E402
from _common import postgres_schema  # noqa: E402
from _common import redis_server  # noqa: E402
from _common import sandbox  # noqa: E402

BUDGET_MIB = 100
#: The size the goal is about; smaller runs extrapolate to it.
TARGET = 100_000


class HorsePeak:
    """Samples the RSS of a worker's forked children until stopped."""

    def __init__(self, worker: psutil.Process) -> None:
        self.worker = worker
        self.peak = 0
        self.last = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for child in self.worker.children():
                    rss = child.memory_info().rss
                    if rss:  # 0: a work horse that exited and awaits reaping (a zombie)
                        self.last = rss
                        self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(conversations: int) -> dict:
    from rq.job import Job
    from sqlalchemy import func
    from sqlalchemy import select

    from hub.extensions import db
    from hub.jobs import redis_connection
    from hub.models import Delivery
    from hub.models import Survey

    result: dict = {"conversations": conversations, "progress": []}
    with (
        tempfile.TemporaryDirectory(prefix="sh-bench-", dir="/tmp") as tmp,
        sandbox(conversations, fast_search=True) as box,
        postgres_schema() as database_url,
    ):
        workdir = Path(tmp)
        with redis_server(workdir) as redis_url:
            env = hub_env(workdir, database_url, redis_url, box.url, 2525, HUB_LOG_LEVEL="WARNING")
            app = make_app(env)
            surveyhub = str(Path(sys.executable).parent / "surveyhub")
            log = (workdir / "worker.log").open("wb")
            worker = subprocess.Popen(
                [surveyhub, "worker", "--queue", "scans"], cwd=ROOT, env=env, stdout=log,
                stderr=log,
            )  # fmt: skip
            try:
                process = psutil.Process(worker.pid)
                time.sleep(5)  # started: the app is created and the worker waits for jobs
                result["idle"] = process.memory_info().rss
                sampler = HorsePeak(process)
                started = time.monotonic()
                connection_id, survey_id = add_survey(app, box.url, box.api_key, "csat")
                job_id = f"scan-connection-{connection_id}"
                tenth = max(1, conversations // 10)
                with app.app_context():
                    while True:
                        time.sleep(1)
                        status = Job.fetch(job_id, connection=redis_connection()).get_status()
                        decided = db.session.execute(select(func.count(Delivery.id))).scalar_one()
                        db.session.rollback()
                        if decided >= tenth * (len(result["progress"]) + 1):
                            result["progress"].append((decided, sampler.last))
                        if status in ("finished", "failed", "stopped", "canceled"):
                            break
                    result["status"] = status
                    result["seconds"] = time.monotonic() - started
                    result["decided"] = decided
                    result["error"] = db.session.get(Survey, survey_id).last_scan_error
                sampler.stop()
                result["peak"] = sampler.peak
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(60)
                log.close()
    return result


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    conversations = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    r = measure(conversations)
    idle = r["idle"]
    print(
        f"scan of {r['decided']} conversations: {r['status']} in {r['seconds']:.0f} s "
        f"({r['decided'] / r['seconds']:.0f} tickets/s){' ' + r['error'] if r['error'] else ''}"
    )
    print(f"idle worker RSS: {idle / MIB:.1f} MiB")
    for decided, rss in r["progress"]:
        print(f"  after {decided:>7} tickets: work horse RSS {rss / MIB:.1f} MiB")
    growth = r["peak"] - idle
    print(f"peak work horse RSS: {r['peak'] / MIB:.1f} MiB (+{growth / MIB:.1f} MiB)")
    progress = r["progress"]
    if r["decided"] < TARGET and len(progress) >= 4:
        # Linear from the last 30 % of the run: pessimistic, since the scan's caches are
        # capped (5,000 customers, 20,000 recent ticket ids) and stop growing once full.
        (n0, rss0), (n1, rss1) = progress[len(progress) * 7 // 10 - 1], progress[-1]
        slope = max(0, rss1 - rss0) / max(1, n1 - n0)
        growth += slope * (TARGET - r["decided"])
        print(
            f"extrapolated to {TARGET} tickets at {slope * 1000 / 1024:.1f} KiB per 1,000 "
            f"(the slope of the last 30 %): +{growth / MIB:.1f} MiB"
        )
    print(f"growth +{growth / MIB:.1f} MiB, budget {BUDGET_MIB} MiB")
    print(f"ratio {growth / MIB / BUDGET_MIB:.2f}")


if __name__ == "__main__":
    main()
