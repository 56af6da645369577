"""Time from "eligible" (resolved, and its delay passed) to "sent", with the real processes.

Run: .venv/bin/python bench/eligible_to_sent.py [scan interval seconds] [tickets]
     (defaults 30 and 3)

Each of two runs (side by side, in two threads) starts its own stack on a fresh
PostgreSQL schema and a private redis-server: gunicorn (one worker, receiving the
sandbox's webhooks), `surveyhub scheduler` (tick 1 s, reconciler every 5 s) and one
`surveyhub worker`, with the Kustomer sandbox (its own process) and an SMTP sink. A
CSAT survey with a delay of 0 hours is activated; a ticket is eligible the moment the
sandbox resolves it (`/__sandbox/conversations/<id>/resolve`), and "sent" is the
delivery's `sent_at`.

1. webhooks: the connection's Kustomer webhook is registered, so the sandbox posts each
   resolution to the hub; polling is out of the way (scan interval 1 hour). Goal <= 60 s.
2. polling only: no webhook; the scheduler scans every `interval` seconds. `tickets`
   tickets are resolved a third of an interval apart. Goal <= interval + 60 s.

Prints each ticket's seconds, the worst of each run against its goal, and as the last
line the larger of the two ratios (goal: ratio <= 1).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT  # noqa: E402
from _common import add_survey  # noqa: E402
from _common import hub_env  # noqa: E402
from _common import make_app  # noqa: E402
from _common import postgres_schema  # noqa: E402
from _common import redis_server  # noqa: E402
from _common import sandbox  # noqa: E402
from _common import smtp_sink  # noqa: E402
from _common import wait_for  # noqa: E402

from hub.embedded import free_port  # noqa: E402

WEBHOOK_GOAL = 60.0
POLLING_SLACK = 60.0
RECONCILE_INTERVAL = 5
TIMEOUT = 400


def run(webhooks: bool, scan_interval: float, tickets: int) -> list[float]:
    """Seconds from resolution to `sent_at` for each resolved ticket."""
    from sqlalchemy import select

    from hub.connections import open_helpdesk
    from hub.extensions import db
    from hub.models import Connection
    from hub.models import Delivery
    from hub.models import Survey

    with (
        tempfile.TemporaryDirectory(prefix="sh-bench-", dir="/tmp") as tmp,
        smtp_sink() as (_sink, smtp_port),
        sandbox(0, open_ones=tickets) as box,
        postgres_schema() as database_url,
    ):
        workdir = Path(tmp)
        with redis_server(workdir) as redis_url:
            env = hub_env(
                workdir, database_url, redis_url, box.url, smtp_port,
                HUB_SCHEDULER_TICK=1, HUB_SCAN_INTERVAL=scan_interval,
                HUB_RECONCILE_INTERVAL=RECONCILE_INTERVAL,
            )  # fmt: skip
            app = make_app(env)
            port = free_port()
            bin_dir = Path(sys.executable).parent
            log = (workdir / "processes.log").open("wb")
            processes = []
            try:
                processes.append(subprocess.Popen(
                    [str(bin_dir / "gunicorn"), "--workers", "1", "--bind",
                     f"127.0.0.1:{port}", "wsgi:app"],
                    cwd=ROOT, env=env, stdout=log, stderr=log,
                ))  # fmt: skip
                wait_for(f"http://127.0.0.1:{port}/healthz")
                connection_id, survey_id = add_survey(
                    app, box.url, box.api_key, "csat", lookback_days=0, delay_hours=0
                )
                if webhooks:
                    with app.app_context():
                        connection = db.session.get(Connection, connection_id)
                        hook = f"http://127.0.0.1:{port}/hooks/kustomer/{connection_id}"
                        _id, token = open_helpdesk(connection).register_webhook(hook)
                        connection.set_secrets({**connection.get_secrets(), "webhook_token": token})
                        db.session.commit()
                for command in (["scheduler"], ["worker"]):
                    processes.append(subprocess.Popen(
                        [str(bin_dir / "surveyhub"), *command], cwd=ROOT, env=env, stdout=log,
                        stderr=log,
                    ))  # fmt: skip
                # Resolve only once the first scan (activation's) is over: a scan still
                # to come would find the tickets without the webhook's help.
                with app.app_context():
                    deadline = time.monotonic() + 120
                    while db.session.get(Survey, survey_id).last_scan_at is None:
                        db.session.rollback()
                        if time.monotonic() > deadline:
                            raise RuntimeError("The first scan did not run")
                        time.sleep(0.5)
                    db.session.rollback()
                time.sleep(2)
                resolved: dict[str, float] = {}
                gap = 0 if webhooks else scan_interval / 3
                for n, ticket in enumerate(box.info["open"]):
                    if n:
                        time.sleep(gap)
                    answer = requests.post(
                        f"{box.url}/__sandbox/conversations/{ticket}/resolve", timeout=10
                    )
                    answer.raise_for_status()
                    resolved[ticket] = time.time()
                sent: dict[str, float] = {}
                deadline = time.monotonic() + TIMEOUT
                with app.app_context():
                    while len(sent) < len(resolved) and time.monotonic() < deadline:
                        rows = db.session.execute(
                            select(Delivery.ticket_id, Delivery.sent_at).where(
                                Delivery.sent_at.is_not(None)
                            )
                        ).all()
                        db.session.rollback()
                        sent = {ticket: at.timestamp() for ticket, at in rows}
                        time.sleep(0.5)
                missing = set(resolved) - set(sent)
                if missing:
                    raise RuntimeError(f"Not sent within {TIMEOUT} s: {sorted(missing)}")
                return [sent[ticket] - resolved[ticket] for ticket in resolved]
            finally:
                for process in reversed(processes):
                    process.send_signal(signal.SIGTERM)
                for process in processes:
                    try:
                        process.wait(30)
                    except subprocess.TimeoutExpired:
                        process.kill()
                log.close()
                if os.environ.get("BENCH_LOG"):  # keep the processes' log
                    shutil.copy(workdir / "processes.log", os.environ["BENCH_LOG"])


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    interval = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0
    tickets = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    # The two runs share nothing (each its own sandbox, schema, Redis and processes):
    # side by side, the script takes the longer run's time, not the sum.
    with ThreadPoolExecutor(2) as pool:
        hooked_run = pool.submit(run, True, 3600, tickets)
        polled_run = pool.submit(run, False, interval, tickets)
        hooked, polled = hooked_run.result(), polled_run.result()
    hook_ratio = max(hooked) / WEBHOOK_GOAL
    poll_goal = interval + POLLING_SLACK
    poll_ratio = max(polled) / poll_goal
    print(f"webhooks: {', '.join(f'{s:.1f}' for s in hooked)} s (reconciler every "
          f"{RECONCILE_INTERVAL} s)")  # fmt: skip
    print(f"webhooks: worst {max(hooked):.1f} s, goal {WEBHOOK_GOAL:.0f} s, ratio {hook_ratio:.2f}")
    print(f"polling every {interval:.0f} s: {', '.join(f'{s:.1f}' for s in polled)} s")
    print(
        f"polling: worst {max(polled):.1f} s, goal {poll_goal:.0f} s "
        f"(interval + {POLLING_SLACK:.0f}), ratio {poll_ratio:.2f}"
    )
    print("worse of the two ratios:")
    print(f"ratio {max(hook_ratio, poll_ratio):.2f}")


if __name__ == "__main__":
    main()
