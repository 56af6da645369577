"""Kustomer requests the hub makes for 3 surveys on one connection, against the lower bound.

Run: .venv/bin/python bench/kustomer_requests.py [conversations] [customers] [ratings]

Runs the real pipeline in-process (SQLite, a private redis-server, an SMTP sink and the
Kustomer sandbox over HTTP): NPS, CSAT and CES surveys on one connection scan the same
conversations, send their emails and write `ratings` ratings back. It counts the
requests by kind and prints them next to the lower bound the documented API allows:

    search pages + distinct customers + ceil(sends / batch size) + 2 per write-back

and the API time that count implies at 300 requests/min (Kustomer's smallest plan). The
last line is the ratio (goal <= 1.1).
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import threading
from datetime import timedelta
from pathlib import Path

from aiosmtpd.controller import Controller
from flask_migrate import upgrade
from sqlalchemy import select
from werkzeug.serving import make_server

from hub.app import create_app
from hub.config import embedded_redis_socket
from hub.embedded import free_port
from hub.embedded import start_redis
from hub.extensions import db
from hub.links import rating_token
from hub.models import Connection
from hub.models import Delivery
from hub.models import Survey
from hub.models import WriteBack
from hub.pipeline.activation import activate
from hub.pipeline.scan import scan_connection
from hub.pipeline.send import SEND_BATCH
from hub.pipeline.send import send_deliveries
from hub.pipeline.writeback import run_write_back
from surveyhub_kustomer.connector import PAGE_SIZE
from surveyhub_kustomer.sandbox.app import create_sandbox
from surveyhub_kustomer.sandbox.org import seed

PLAN_REQUESTS_PER_MINUTE = 300
SURVEYS = (("nps", 11), ("csat", 3), ("ces", 7))


class CountingSink:
    """An SMTP server that accepts and counts."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.count += 1
        return "250 OK"


def _org(conversations: int, customers: int):
    seeded = seed(eligible=0)
    org = seeded.org
    agent = next(iter(org.users))
    people = [org.add_customer(f"P{n}", [f"p{n}@example.com"]) for n in range(customers)]
    for n in range(conversations):
        # Resolved over the last four weeks, a little apart, all older than the delay.
        ago = timedelta(hours=50) + timedelta(days=26) * n / max(1, conversations)
        org.add_conversation(
            people[n % customers], assignee=agent, updated_ago=ago, resolved_ago=ago
        )
    return seeded


def measure(conversations: int = 2000, customers: int = 700, ratings: int = 50) -> dict:
    """Run the pipeline over a seeded org; return request counts and the lower bound."""
    seeded = _org(conversations, customers)
    sandbox = create_sandbox(seeded.org, rate_limit=1_000_000, search_limit=1_000_000)
    counts = sandbox.extensions["sandbox"]["counts"]
    server = make_server("127.0.0.1", 0, sandbox, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = CountingSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    workdir = Path(tempfile.mkdtemp(prefix="sh-bench-", dir="/tmp"))
    redis = start_redis(workdir)
    try:
        app = create_app(
            {
                "TESTING": True,
                "SECRET_KEY": "bench-secret-key-that-is-long-enough",
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{workdir / 'hub.db'}",
                "REDIS_URL": f"unix://{embedded_redis_socket(workdir)}",
                "INSTANCE_PATH": workdir / "instance",
                "HUB_PLUGINS": [],
                "HUB_DISABLED_PLUGINS": [],
                "HUB_WRITEBACK_GRACE": 0,
                "HUB_ALLOWED_HELPDESK_URLS": [url],
                "HUB_BASE_URL": "http://localhost:5000",
                "SMTP_HOST": "127.0.0.1",
                "SMTP_PORT": smtp.port,
            }
        )
        with app.app_context():
            upgrade()
            connection = Connection(helpdesk="kustomer", name="Bench", settings={"url": url})
            connection.set_secrets({"api_key": seeded.api_key})
            db.session.add(connection)
            db.session.commit()
            for metric, scale in SURVEYS:
                survey = Survey(
                    connection_id=connection.id,
                    metric=metric,
                    scale=scale,
                    name=metric,
                    settings={"company_name": "Acme"},
                )
                db.session.add(survey)
                db.session.commit()
                activate(survey, lookback_days=30)
            counts.clear()  # activation's metadata calls are not part of the scan

            scan_connection(connection.id)
            decided = set(db.session.execute(select(Delivery.ticket_id).distinct()).scalars())
            scanned = len(decided)  # the conversations in the widest window
            looked_up = {
                c["customer_id"]
                for ticket_id, c in seeded.org.conversations.items()
                if ticket_id in decided
                and c["attributes"]["firstMessageIn"]
                and c["attributes"]["firstMessageIn"]["channel"] == "email"
                and c["attributes"]["status"] == "done"
                and c["attributes"]["direction"] == "in"
            }
            pending = (
                db.session.execute(
                    select(Delivery.id).where(Delivery.state == "pending").order_by(Delivery.id)
                )
                .scalars()
                .all()
            )
            # As the workers would: one job per SEND_BATCH deliveries, in scan order.
            for start in range(0, len(pending), SEND_BATCH):
                send_deliveries(pending[start : start + SEND_BATCH])
            sends = db.session.execute(
                select(db.func.count(Delivery.id)).where(Delivery.state == "sent")
            ).scalar_one()
            sent_ids = (
                db.session.execute(
                    select(Delivery.id).where(Delivery.state == "sent").order_by(Delivery.id)
                )
                .scalars()
                .all()
            )
            client = app.test_client()
            for delivery_id in sent_ids[:ratings]:
                with app.test_request_context():
                    token = rating_token(delivery_id)
                client.post(f"/r/{token}/3")
            for write_back_id in db.session.execute(select(WriteBack.id)).scalars().all():
                run_write_back(write_back_id)
            written = db.session.execute(
                select(db.func.count(WriteBack.id)).where(WriteBack.state == "done")
            ).scalar_one()
        result = {
            "conversations": scanned,
            "distinct_customers": len(looked_up),
            "sends": sends,
            "emails": sink.count,
            "write_backs": written,
            "searches": counts["POST /v1/customers/search"],
            "customer_gets": counts["GET /v1/customers/<customer_id>"],
            "conversation_gets": counts["GET /v1/conversations/<ids>"],
            "write_back_requests": counts["POST /v1/conversations/<conversation_id>/notes"]
            + counts["PATCH /v1/conversations/<conversation_id>"],
            "total": sum(counts.values()),
        }
        result["lower_bound"] = (
            math.ceil(scanned / PAGE_SIZE)
            + result["distinct_customers"]
            + math.ceil(sends / SEND_BATCH)
            + 2 * written
        )
        return result
    finally:
        redis.process.terminate()
        redis.process.wait(10)
        smtp.stop()
        server.shutdown()


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    logging.basicConfig(level=logging.WARNING)
    conversations = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    customers = int(sys.argv[2]) if len(sys.argv) > 2 else 700
    ratings = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    r = measure(conversations, customers, ratings)
    pages = math.ceil(r["conversations"] / PAGE_SIZE)
    batches = math.ceil(r["sends"] / SEND_BATCH)
    print(f"surveys on one connection: {len(SURVEYS)} ({', '.join(m for m, _ in SURVEYS)})")
    print(f"conversations scanned:     {r['conversations']}")
    print(f"emails sent:               {r['sends']} (SMTP sink received {r['emails']})")
    print(f"search requests:           {r['searches']} (lower bound {pages} pages)")
    print(
        f"customer GETs:             {r['customer_gets']} "
        f"(lower bound {r['distinct_customers']} distinct customers)"
    )
    print(
        f"conversation GETs:         {r['conversation_gets']} "
        f"(lower bound ceil({r['sends']} sends / {SEND_BATCH}) = {batches})"
    )
    per = r["write_back_requests"] / max(1, r["write_backs"])
    print(f"requests per write-back:   {per:.2f} (lower bound 2: note + PATCH)")
    print(f"requests in all:           {r['total']} (lower bound {r['lower_bound']})")
    minutes = r["total"] / PLAN_REQUESTS_PER_MINUTE
    print(
        f"API time at {PLAN_REQUESTS_PER_MINUTE} requests/min: {minutes * 60:.0f} s "
        f"(lower bound {r['lower_bound'] / PLAN_REQUESTS_PER_MINUTE * 60:.0f} s)"
    )
    print(f"requests / lower bound: {r['total'] / r['lower_bound']:.3f} (goal <= 1.1)")


if __name__ == "__main__":
    main()
