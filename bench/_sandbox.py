"""The Kustomer sandbox for the benchmarks, in its own process.

Run: python bench/_sandbox.py CONVERSATIONS [--fast-search] [--open K]

Seeds the org with `_common.build_org`, serves the sandbox on a free port (werkzeug,
threaded, no rate limits) and prints one JSON line: url, api key, conversations and
distinct customers, and the ids of `K` more conversations that are open (assigned email
conversations from new customers, for `/__sandbox/conversations/<id>/resolve`).
`GET /__sandbox/bench-counts` answers the request counts by route.

`--fast-search` swaps the search route for an indexed copy that answers the hub's scan
queries (last-done range, `updatedAt >= x`, sorted by `updatedAt` ascending) in
O(page) instead of filtering and sorting the whole org on every page: the sandbox's own
search costs about 0.3 s a page at 100,000 conversations, which would make a 1,000-page
scan measure the sandbox. The index is built once: use it only while conversations do
not change (a scan). Any other query goes to the sandbox's own search.
"""

from __future__ import annotations

import bisect
import json
import logging
import sys
from pathlib import Path

from flask import jsonify
from flask import request
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import build_org  # noqa: E402

from surveyhub_kustomer.sandbox.app import MAX_PAGE  # noqa: E402
from surveyhub_kustomer.sandbox.app import create_sandbox  # noqa: E402

LAST_DONE = "conversation_last_done_created_at"
UPDATED = "conversation_updated_at"


def install_fast_search(app, org) -> None:
    """Answer the scan's search shape from an index sorted by (updatedAt, id)."""
    own = app.view_functions["search"]
    index: dict[str, list] = {}

    def build() -> None:
        rows = sorted(
            (c["attributes"]["updatedAt"], cid, (c["attributes"].get("lastDone") or {}))
            for cid, c in org.conversations.items()
        )
        index["keys"] = [(updated, cid) for updated, cid, _ in rows]
        index["done"] = [last_done.get("createdAt") for _, _, last_done in rows]

    def resource(cid: str) -> dict:
        conversation = org.conversations[cid]
        customer_id = conversation["customer_id"]
        return {
            "type": "conversation",
            "id": cid,
            "attributes": conversation["attributes"],
            "relationships": {
                "customer": {
                    "data": {"type": "customer", "id": customer_id},
                    "links": {"self": f"/v1/customers/{customer_id}"},
                },
            },
            "links": {"self": f"/v1/conversations/{cid}"},
        }

    def search():
        body = request.get_json(silent=True) or {}
        page = int(request.args.get("page", 1))
        size = min(int(request.args.get("pageSize", 100)), 500)
        bounds = {"gte": None, "lte": None, "from": None}
        shape_ok = (
            set(body) == {"queryContext", "and", "sort"}
            and body["queryContext"] == "conversation"
            and body["sort"] == [{UPDATED: "asc"}]
            and isinstance(body["and"], list)
            and page <= MAX_PAGE
        )
        for criterion in body.get("and") or [] if shape_ok else []:
            ((attribute, condition),) = criterion.items() if len(criterion) == 1 else ((0, {}),)
            if attribute == LAST_DONE and set(condition) <= {"gte", "lte"}:
                bounds.update(condition)
            elif attribute == UPDATED and set(condition) == {"gte"}:
                bounds["from"] = condition["gte"]
            else:
                shape_ok = False
        if not shape_ok:
            return own()
        if "keys" not in index:
            build()
        keys, done = index["keys"], index["done"]
        position = bisect.bisect_left(keys, (bounds["from"], "")) if bounds["from"] else 0
        wanted = page * size + 1  # one more than needed: is there a next page?
        found = []
        for i in range(position, len(keys)):
            at = done[i]
            if at is None:
                continue
            if (bounds["gte"] is None or at >= bounds["gte"]) and (
                bounds["lte"] is None or at <= bounds["lte"]
            ):
                found.append(keys[i][1])
                if len(found) >= wanted:
                    break
        chunk = found[(page - 1) * size : page * size]
        more = len(found) > page * size
        base = "/v1/customers/search"
        return jsonify(
            {
                "meta": {"pageSize": size, "page": page},
                "data": [resource(cid) for cid in chunk],
                "links": {
                    "self": f"{base}?page={page}&pageSize={size}",
                    "first": f"{base}?page=1&pageSize={size}",
                    "prev": f"{base}?page={page - 1}&pageSize={size}" if page > 1 else None,
                    "next": f"{base}?page={page + 1}&pageSize={size}" if more else None,
                },
            }
        )

    app.view_functions["search"] = search


def make_sandbox(conversations: int, fast_search: bool = False, open_ones: int = 0, now=None):
    """(app, seeded org, distinct customers of the added conversations, open ids); `now`
    is the org's clock (default: the current second)."""
    from datetime import timedelta

    seeded, customers = build_org(conversations, now=now)
    agent = next(iter(seeded.org.users))
    opened = [
        seeded.org.add_conversation(
            seeded.org.add_customer(f"Open {n}", [f"open{n}@example.com"]),
            status="open",
            assignee=agent,
            resolved_ago=None,
            updated_ago=timedelta(hours=1),
        )
        for n in range(open_ones)
    ]
    app = create_sandbox(seeded.org, rate_limit=10**9, search_limit=10**9)
    counts = app.extensions["sandbox"]["counts"]
    app.add_url_rule(
        "/__sandbox/bench-counts", "bench_counts", lambda: jsonify(dict(counts)), methods=["GET"]
    )
    if fast_search:
        install_fast_search(app, seeded.org)
    return app, seeded, customers, opened


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    conversations = int(sys.argv[1])
    open_ones = int(sys.argv[sys.argv.index("--open") + 1]) if "--open" in sys.argv else 0
    app, seeded, customers, opened = make_sandbox(
        conversations, "--fast-search" in sys.argv, open_ones
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    info = {
        "url": f"http://127.0.0.1:{server.server_port}",
        "api_key": seeded.api_key,
        "conversations": len(seeded.org.conversations),
        "added": conversations,
        "distinct_customers": customers,
        "open": opened,
    }
    print(json.dumps(info), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
