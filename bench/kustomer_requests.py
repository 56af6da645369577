"""Requests the Kustomer connector makes on the happy path, against the local sandbox.

Run: .venv/bin/python bench/kustomer_requests.py [conversations] [customers]

Prints the search and customer requests a scan costs next to the budget
(ceil(N / pageSize) searches, at most one request per distinct customer) and the
requests one rating's write-back costs (exactly 2: note + PATCH).
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from datetime import timedelta

from werkzeug.serving import make_server

from hub.helpdesk import HelpdeskContext
from hub.helpdesk import ScanWindow
from surveyhub_kustomer.connector import PAGE_SIZE
from surveyhub_kustomer.connector import Kustomer
from surveyhub_kustomer.sandbox.app import create_sandbox
from surveyhub_kustomer.sandbox.org import seed


def measure(conversations: int = 1000, customers: int = 150) -> dict[str, int]:
    """Scan `conversations` resolved email conversations of `customers` people; count calls."""
    seeded = seed(eligible=0)
    org = seeded.org
    people = [org.add_customer(f"P{n}", [f"p{n}@example.com"]) for n in range(customers)]
    agent = next(iter(org.users))
    for n in range(conversations):
        org.add_conversation(
            people[n % customers], assignee=agent, updated_ago=timedelta(hours=60, seconds=n)
        )
    app = create_sandbox(org, rate_limit=100_000, search_limit=100_000)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        kustomer = Kustomer(
            {"url": url}, {"api_key": seeded.api_key}, HelpdeskContext(allowed_urls=(url,))
        )
        window = ScanWindow(
            resolved_after=org.now - timedelta(days=30),
            resolved_before=org.now - timedelta(hours=48),
            channels=("email",),
        )
        # The seed's own skip cases are in the window too; count what the scan returns.
        found = sum(1 for _ in kustomer.scan(window))
        counts = app.extensions["sandbox"]["counts"]
        scan = {
            "conversations": found,
            "distinct_customers": len({c["customer_id"] for c in org.conversations.values()}),
            "search_requests": counts["POST /v1/customers/search"],
            "customer_requests": counts["GET /v1/customers/<customer_id>"],
        }
        counts.clear()
        target = next(iter(org.conversations))
        kustomer.write_back(target, "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:bench", False)
        scan["write_back_requests"] = sum(counts.values())
        return scan
    finally:
        server.shutdown()


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    conversations = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    customers = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    result = measure(conversations, customers)
    pages = math.ceil(result["conversations"] / PAGE_SIZE)
    print(f"conversations scanned:   {result['conversations']}")
    print(
        f"search requests:         {result['search_requests']} "
        f"(budget ceil(N/{PAGE_SIZE}) = {pages}; ratio {result['search_requests'] / pages:.2f})"
    )
    print(
        f"customer requests:       {result['customer_requests']} "
        f"(at most {result['distinct_customers']} distinct customers; ratio "
        f"{result['customer_requests'] / result['distinct_customers']:.2f})"
    )
    print(f"write-back requests:     {result['write_back_requests']} (budget 2: note + PATCH)")


if __name__ == "__main__":
    main()
