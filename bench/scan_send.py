"""Scan + decide + send of N eligible tickets through the hub, against a hand-written loop.

Run: .venv/bin/python bench/scan_send.py [tickets] [ratings]   (default 10,000 and 100)

The Kustomer sandbox (its own process, indexed search) holds `tickets` resolved email
conversations (about 0.7 x as many distinct customers) plus the sandbox's seeded cases.
One CSAT survey (48-hour delay, no cooldown) is activated with a 30-day look-back on a
fresh PostgreSQL schema, and then, in this order, side by side in one run:

1. the baseline: a minimal hand-written loop in its own process (`--baseline`) doing
   the same helpdesk calls the hub makes (keyset-paged search pages, one customer GET per
   distinct customer, one conversation GET per 100 sends to re-check) and the same SMTP
   sends (one connection per 100, a small signed-link email), with no database;
2. the hub: one `surveyhub worker --burst` process (RQ, a private redis-server) that
   runs the scan job and then every send job it queued, until all are done;
3. the baseline again (its two times are averaged).

Then `ratings` sent surveys are rated over the hub's public page and written back.
Prints the times, the helpdesk requests of the scan against the lower bound (search
pages + one lookup per distinct customer; goal <= 1.05), the requests per rating written
back (goal 2.0), and as the last line the time ratio hub / baseline (goal <= 1.5).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT  # noqa: E402
from _common import add_survey  # noqa: E402
from _common import hub_env  # noqa: E402
from _common import make_app  # noqa: E402
from _common import postgres_schema  # noqa: E402
from _common import redis_server  # noqa: E402
from _common import run_timed  # noqa: E402
from _common import sandbox  # noqa: E402
from _common import smtp_sink  # noqa: E402

GOAL_TIME = 1.5
GOAL_SCAN = 1.05
DELAY = timedelta(hours=48)
LAST_DONE = "conversation_last_done_created_at"
UPDATED = "conversation_updated_at"
ADDRESS = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")
SCAN_KINDS = ("POST /v1/customers/search", "GET /v1/customers/<customer_id>")
RECHECK = "GET /v1/conversations/<ids>"
WRITES = (
    "POST /v1/conversations/<conversation_id>/notes",
    "PATCH /v1/conversations/<conversation_id>",
)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


# -- the baseline: what a minimal hand-written script would do --------------------------


def baseline(url: str, api_key: str, smtp_port: int, resolved_after: str) -> dict:
    """Scan, decide and send like the hub, with no database; what it did."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {api_key}"
    before = iso(datetime.now(UTC) - DELAY)
    window = [{LAST_DONE: {"gte": resolved_after}}, {LAST_DONE: {"lte": before}}]
    seen: set[str] = set()
    customers: dict[str, dict] = {}
    due: list[tuple[str, str, str]] = []
    updated_from, page = None, 1
    while True:
        criteria = window + ([{UPDATED: {"gte": updated_from}}] if updated_from else [])
        body = {"queryContext": "conversation", "and": criteria, "sort": [{UPDATED: "asc"}]}
        result = session.post(
            f"{url}/v1/customers/search?page={page}&pageSize=100", json=body, timeout=60
        ).json()
        last = None
        for conversation in result["data"]:
            attributes = conversation["attributes"]
            last = attributes["updatedAt"]
            if conversation["id"] in seen:
                continue
            seen.add(conversation["id"])
            first = attributes.get("firstMessageIn") or {}
            assigned = (attributes.get("lastDone") or {}).get("assignedUsers") or attributes.get(
                "assignedUsers"
            )
            if (
                attributes["status"] != "done"
                or attributes["direction"] != "in"
                or first.get("channel") != "email"
                or first.get("directionType") != "initial-in"
                or not assigned
                or attributes.get("satisfactionLevel")
                or attributes["updatedAt"] > before
            ):
                continue
            customer_id = conversation["relationships"]["customer"]["data"]["id"]
            if customer_id not in customers:
                customers[customer_id] = session.get(
                    f"{url}/v1/customers/{customer_id}", timeout=60
                ).json()["data"]["attributes"]
            customer = customers[customer_id]
            emails = [e["email"].strip() for e in customer.get("emails") or ()]
            email = next((e.lower() for e in emails if ADDRESS.fullmatch(e)), None)
            if email:
                due.append((conversation["id"], email, customer.get("displayName") or ""))
        if not result["links"].get("next"):
            break
        if last is not None and last != updated_from:
            updated_from, page = last, 1
        else:
            page += 1
    sent = 0
    key = b"baseline-signing-key"
    for start in range(0, len(due), 100):
        batch = due[start : start + 100]
        data = session.get(
            f"{url}/v1/conversations/{','.join(t for t, _, _ in batch)}", timeout=60
        ).json()["data"]
        tickets = {c["id"]: c["attributes"] for c in (data if isinstance(data, list) else [data])}
        smtp = smtplib.SMTP("127.0.0.1", smtp_port, timeout=60)
        for ticket_id, email, name in batch:
            attributes = tickets.get(ticket_id)
            if not attributes or attributes["status"] != "done" or attributes["updatedAt"] > before:
                continue
            links = []
            for score in (1, 2, 3):
                token = hmac.new(key, f"{ticket_id}:{score}".encode(), hashlib.sha256).hexdigest()
                links.append(f'<a href="http://127.0.0.1:5000/r/{token}/{score}">{score}</a>')
            message = EmailMessage()
            message["From"] = "Acme <surveys@localhost>"
            message["To"] = email
            message["Subject"] = "How did we do?"
            message["Message-ID"] = make_msgid()
            message.set_content(f"Hello {name},\nhow satisfied were you with our help?\n")
            message.add_alternative(
                f"<p>Hello {name},</p><p>How satisfied were you?</p><p>{' '.join(links)}</p>",
                subtype="html",
            )
            smtp.send_message(message)
            sent += 1
        smtp.quit()
    return {"scanned": len(seen), "customers": len(customers), "sent": sent}


# -- the run -----------------------------------------------------------------------------


def run_baseline(box, smtp_port: int, resolved_after: str, log: Path) -> tuple[float, dict, dict]:
    box.reset_counts()
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, __file__, "--baseline", box.url, box.api_key, str(smtp_port),
         resolved_after],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    seconds = time.monotonic() - started
    with log.open("a") as out:
        out.write(run.stderr)
    return seconds, json.loads(run.stdout), box.counts()


def measure(tickets: int, ratings: int) -> dict:
    from sqlalchemy import func
    from sqlalchemy import select

    from hub.extensions import db
    from hub.links import rating_token
    from hub.models import Delivery
    from hub.models import Survey
    from hub.models import WriteBack
    from hub.pipeline.writeback import run_write_back

    result: dict = {"tickets": tickets}
    with (
        tempfile.TemporaryDirectory(prefix="sh-bench-", dir="/tmp") as tmp,
        smtp_sink() as (sink, smtp_port),
        sandbox(tickets, fast_search=True) as box,
        postgres_schema() as database_url,
    ):
        workdir = Path(tmp)
        log = workdir / "processes.log"
        with redis_server(workdir) as redis_url:
            env = hub_env(workdir, database_url, redis_url, box.url, smtp_port)
            app = make_app(env)
            _connection_id, survey_id = add_survey(app, box.url, box.api_key, "csat")
            with app.app_context():
                after = iso(db.session.get(Survey, survey_id).resolved_since)
            result["distinct_customers"] = box.info["distinct_customers"]

            first, result["baseline"], result["baseline_counts"] = run_baseline(
                box, smtp_port, after, log
            )
            baseline_mails = sink.count
            box.reset_counts()
            worker = [str(Path(sys.executable).parent / "surveyhub"), "worker", "--burst"]
            if os.environ.get("BENCH_PROFILE"):  # py-spy's collapsed stacks of the worker
                spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--subprocesses"]
                worker = [
                    *spy,
                    "-r",
                    "50",
                    "-f",
                    "raw",
                    "-o",
                    os.environ["BENCH_PROFILE"],
                    "--",
                    *worker,
                ]
            result["hub_seconds"], result["hub_cpu"] = run_timed(worker, env, log)
            result["hub_counts"] = box.counts()
            result["hub_mails"] = sink.count - baseline_mails
            second, again, _ = run_baseline(box, smtp_port, after, log)
            result["baseline_seconds"] = (first, second)
            result["baseline_mails"] = baseline_mails
            assert again["sent"] == result["baseline"]["sent"], (again, result["baseline"])

            with app.app_context():
                states = dict(
                    db.session.execute(
                        select(Delivery.state, func.count(Delivery.id)).group_by(Delivery.state)
                    ).all()
                )
                result["states"] = states
                sent_ids = (
                    db.session.execute(
                        select(Delivery.id).where(Delivery.state == "sent").order_by(Delivery.id)
                    )
                    .scalars()
                    .all()
                )
                box.reset_counts()
                client = app.test_client()
                for delivery_id in sent_ids[:ratings]:
                    with app.test_request_context():
                        token = rating_token(delivery_id)
                    client.post(f"/r/{token}/3")
                for write_back_id in db.session.execute(select(WriteBack.id)).scalars().all():
                    run_write_back(write_back_id)
                result["written_back"] = db.session.execute(
                    select(func.count(WriteBack.id)).where(WriteBack.state == "done")
                ).scalar_one()
                result["write_counts"] = box.counts()
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--baseline":
        url, api_key, port, after = sys.argv[2:6]
        print(json.dumps(baseline(url, api_key, int(port), after)))
        return
    logging.basicConfig(level=logging.WARNING)
    tickets = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    ratings = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    r = measure(tickets, ratings)
    hub_counts, base_counts = r["hub_counts"], r["baseline_counts"]
    sent = r["states"].get("sent", 0)
    base = r["baseline"]
    pages = math.ceil(base["scanned"] / 100)
    bound = pages + base["customers"]
    scan_requests = sum(hub_counts.get(kind, 0) for kind in SCAN_KINDS)
    baseline_time = sum(r["baseline_seconds"]) / 2
    print(f"tickets: {tickets} eligible of {base['scanned']} scanned")
    print(f"hub deliveries by state: {dict(sorted(r['states'].items()))}")
    print(f"emails: hub {sent} (sink got {r['hub_mails']}), baseline {base['sent']}")
    print(
        f"hub: {r['hub_seconds']:.1f} s wall, {r['hub_cpu']:.1f} s CPU "
        f"({sent / r['hub_seconds']:.0f} emails/s)"
    )
    print(
        "baseline: "
        + ", ".join(f"{s:.1f} s" for s in r["baseline_seconds"])
        + f" wall (mean {baseline_time:.1f} s, {base['sent'] / baseline_time:.0f} emails/s)"
    )
    print(
        f"helpdesk requests: hub {json.dumps(hub_counts, sort_keys=True)}; "
        f"baseline {json.dumps(base_counts, sort_keys=True)}"
    )
    print(
        f"scan requests: {scan_requests} (lower bound {bound} = {pages} pages + "
        f"{base['customers']} distinct customers), "
        f"ratio {scan_requests / bound:.3f} (goal <= {GOAL_SCAN})"
    )
    print(
        f"re-check requests: {hub_counts.get(RECHECK, 0)} "
        f"(ceil({sent} / 100) = {math.ceil(sent / 100)})"
    )
    writes = sum(r["write_counts"].get(kind, 0) for kind in WRITES)
    other = sum(r["write_counts"].values()) - writes
    print(
        f"requests per rating written back: {writes / max(1, r['written_back']):.2f} "
        f"({r['written_back']} written back, {other} other requests; goal 2.0)"
    )
    print(f"hub / baseline time: goal <= {GOAL_TIME}")
    print(f"ratio {r['hub_seconds'] / baseline_time:.2f}")


if __name__ == "__main__":
    main()
