"""The database work of a scan and a send job grows with pages and emails, not more.

A scan reads what the hub knows of a page of tickets in one query per table and records
the page's decisions in one statement and one commit; a send job reads its batch's
settings, own writes, suppressions, cooldowns and webhook subscriptions once, then
spends two statements per email (the claim and the outcome: the at-most-once protocol
needs both) and one commit (an outcome is committed with the next email's claim).
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import event
from sqlalchemy import select

from hub.extensions import db
from hub.models import Delivery
from hub.pipeline.scan import scan_connection
from hub.pipeline.send import send_deliveries
from tests.pipeline.conftest import add_survey

#: Conversations added to the sandbox's seeded ones: three pages and a bit.
EXTRA = 260


@contextlib.contextmanager
def counting(engine) -> Iterator[Counter]:
    """Count the statements (by their first word and table) and commits on `engine`."""
    seen: Counter = Counter()

    def statement(conn, cursor, sql, parameters, context, executemany):
        words = [word.strip('"') for word in sql.split()]
        table = next((word for word in words[1:] if word in TABLES), "")
        seen[f"{words[0].upper()} {table}".strip()] += 1

    def commit(conn):
        seen["COMMIT"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "commit", commit)


TABLES = {table.name for table in db.metadata.sorted_tables}


def add_conversations(sandbox, count: int) -> None:
    org = sandbox.seeded.org
    agent = next(iter(org.users))
    people: list[str] = []
    for n in range(count):
        if n % 4 == 3:  # a returning customer
            person = people[-2]
        else:
            person = org.add_customer(f"Bulk {n}", [f"bulk{n}@example.com"])
            people.append(person)
        ago = timedelta(hours=60, minutes=n)
        org.add_conversation(person, assignee=agent, updated_ago=ago, resolved_ago=ago)


def test_a_scan_costs_statements_per_page_and_a_send_two_per_email(hub):
    add_conversations(hub.sandbox, EXTRA)
    with hub.app.app_context():
        # A second survey on the connection, with a cooldown: each page's decisions
        # check both surveys' recent deliveries, still once per page.
        add_survey(hub.connection_id, metric="csat", scale=5, cooldown_days=30)
        with counting(db.engine) as scan:
            reports = scan_connection(hub.connection_id)
        decided = sum(r.seen for r in reports.values())
        assert decided > 2 * EXTRA, reports
        pages = -(-(EXTRA + 40) // 100) + 1  # the seeded ones, and keyset restarts
        # Before: about six statements and one commit per ticket and survey.
        assert scan["COMMIT"] <= pages + 4, scan
        assert sum(n for k, n in scan.items() if k != "COMMIT") <= 12 * pages + 20, scan
        assert scan["INSERT deliveries"] <= pages + 1, scan

        pending = list(
            db.session.execute(
                select(Delivery.id)
                .where(Delivery.state == "pending")
                .order_by(Delivery.id)
                .limit(100)
            ).scalars()
        )
        assert len(pending) == 100
        with counting(db.engine) as send:
            states = send_deliveries(pending)
        sent = sum(state == "sent" for state in states.values())
        assert sent >= 90, Counter(states.values())
        # Two conditional updates per email (claim, outcome) and one commit: an
        # email's outcome is committed with the next email's claim.
        assert send["UPDATE deliveries"] == 2 * sent + (len(pending) - sent), send
        assert send["COMMIT"] <= len(pending) + 2, send
        reads = sum(n for k, n in send.items() if k.startswith("SELECT"))
        # Before: eight reads per email (the row and its survey re-loaded after each
        # commit, own writes, the suppression key and list, webhook subscriptions).
        assert reads <= 10, send
    assert len(hub.smtp.handler.messages) >= sent


def test_an_outcome_waiting_for_the_next_commit_survives_a_failure_after_it(hub, monkeypatch):
    """Email 1 goes out; building email 2 fails (a bug), and the job is then cut short
    by an error outside any delivery: 1 is still recorded sent, 2 waits with the error."""
    import hub.pipeline.send as send

    add_conversations(hub.sandbox, 3)
    with hub.app.app_context():
        scan_connection(hub.connection_id)
        pending = list(
            db.session.execute(
                select(Delivery.id).where(Delivery.state == "pending").order_by(Delivery.id)
            ).scalars()
        )[:4]
        real_build = send.build_email

        def build(survey, recipient, **kwargs):
            if recipient.delivery_id == pending[1]:
                raise RuntimeError("a template bug")
            return real_build(survey, recipient, **kwargs)

        monkeypatch.setattr(send, "build_email", build)
        states = send_deliveries(pending[:2])
        assert states == {pending[0]: "sent", pending[1]: "pending"}
        rows = {d.id: d for d in db.session.execute(select(Delivery)).scalars()}
        assert rows[pending[0]].state == "sent" and rows[pending[0]].message_id
        assert rows[pending[1]].state == "pending" and "a template bug" in rows[pending[1]].error

        # The last email's outcome is committed even when the job then fails.
        def broken_should_yield(self):
            raise ConnectionError("Redis went away")

        monkeypatch.setattr(send.Turn, "should_yield", broken_should_yield)
        monkeypatch.setattr(send, "build_email", real_build)
        try:
            send_deliveries([pending[2], pending[3]])
        except ConnectionError:
            pass
        else:
            raise AssertionError("the job should have failed")
        db.session.expire_all()
        assert db.session.get(Delivery, pending[2]).state == "sent"
        assert db.session.get(Delivery, pending[3]).state == "pending"
    assert len(hub.smtp.handler.messages) == 2
