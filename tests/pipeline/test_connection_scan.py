"""Kustomer as documented, through the pipeline: awkward tickets, our own writes, one
scan per connection and batched re-checks, against the strict sandbox over HTTP."""

from __future__ import annotations

import math
from datetime import UTC
from datetime import datetime
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy import update

from hub.extensions import db
from hub.links import rating_token
from hub.models import Delivery
from hub.models import Survey
from hub.models import WriteBack
from hub.pipeline.recovery import reconcile
from hub.pipeline.scan import scan_connection
from hub.pipeline.scan import scan_survey
from hub.pipeline.send import send_deliveries
from hub.pipeline.writeback import run_write_back
from surveyhub_kustomer.sandbox.org import stamp
from tests.pipeline.conftest import add_survey
from tests.pipeline.test_pipeline import deliveries
from tests.pipeline.test_pipeline import send_pending

CUSTOMER_GET = "GET /v1/customers/<customer_id>"
CONVERSATION_GET = "GET /v1/conversations/<ids>"
SEARCH = "POST /v1/customers/search"


def requests_made(hub) -> dict[str, int]:
    return hub.sandbox.state()["requests"]


def test_activation_defined_the_attribute_and_kept_every_other_property(hub):
    document = hub.sandbox.state()["metadata"]["conversation"]
    assert document["properties"]["surveyhubNpsScoreNum"] == {
        "displayName": "NPS score (SurveyHub)"
    }
    assert document["properties"]["orderNumberStr"] == {
        "displayName": "Order number",
        "type": "string",
    }
    assert document["standardProperties"] == {"priority": {"displayName": "Priority"}}


def test_awkward_tickets_are_decided_alike_in_the_dry_run_and_the_scan(hub):
    seeded = hub.sandbox.seeded
    with hub.app.app_context():
        previewed = {}
        scan_survey(
            hub.survey_id, dry_run=True, on_decision=lambda t, r: previewed.update({t.id: r})
        )
        scan_survey(hub.survey_id)
    rows = deliveries(hub.app, hub.survey_id)
    recorded = {t: r.skip_reason for t, r in rows.items()}
    assert previewed == recorded
    for reason in ("started by an agent", "surveyed by the helpdesk", "invalid email"):
        tickets = [t for t, r in seeded.skipped.items() if r == reason]
        assert tickets and all(recorded[t] == reason for t in tickets)
    for ticket, address in seeded.addresses.items():
        assert (rows[ticket].state, rows[ticket].requester_email) == ("pending", address)
    send_pending(hub.app, hub.survey_id)
    received = {m["To"].addresses[0].addr_spec for m in hub.smtp.handler.messages}
    assert set(seeded.addresses.values()) <= received
    assert "customer9@example.com" not in " ".join(received)  # the listed address


def test_the_native_survey_setting_can_be_turned_off(hub):
    (native,) = [
        t for t, r in hub.sandbox.seeded.skipped.items() if r == "surveyed by the helpdesk"
    ]
    with hub.app.app_context():
        csat = add_survey(hub.connection_id, "csat", 3, skip_helpdesk_surveyed=False)
        scan_survey(csat)
    assert deliveries(hub.app, csat)[native].state == "pending"


def rate_and_write_back(hub, ticket_id: str, value: int = 9) -> None:
    row = deliveries(hub.app, hub.survey_id)[ticket_id]
    with hub.app.test_request_context():
        token = rating_token(row.id)
    hub.app.test_client().post(f"/r/{token}/{value}")
    with hub.app.app_context():
        for item in db.session.execute(select(WriteBack)).scalars().all():
            if item.state == "pending":
                assert run_write_back(item.id) == "done"


def test_a_survey_created_after_ratings_were_written_back_still_surveys_those_tickets(hub):
    seeded = hub.sandbox.seeded
    rated, touched = seeded.eligible[0], seeded.eligible[2]
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    before = hub.sandbox.org.conversations[rated]["attributes"]["updatedAt"]
    rate_and_write_back(hub, rated)
    after = hub.sandbox.org.conversations[rated]["attributes"]["updatedAt"]
    # Kustomer bumps updatedAt on our note and PATCH: to a survey with a 48-hour delay
    # the ticket now looks updated a moment ago.
    assert after > before
    assert datetime.fromisoformat(after.replace("Z", "+00:00")) > datetime.now(UTC) - timedelta(
        minutes=5
    )
    # An agent really touches another rated ticket after our write: that one counts.
    rate_and_write_back(hub, touched)
    hub.sandbox.org.conversations[touched]["attributes"]["updatedAt"] = stamp(
        datetime.now(UTC) + timedelta(seconds=5)
    )
    with hub.app.app_context():
        csat = add_survey(hub.connection_id, "csat", 3)
        previewed = {}
        scan_survey(csat, dry_run=True, on_decision=lambda t, r: previewed.update({t.id: r}))
        scan_survey(csat)
    rows = deliveries(hub.app, csat)
    assert previewed == {t: r.skip_reason for t, r in rows.items()}  # the dry run agrees
    assert (rows[rated].state, rows[rated].skip_reason) == ("pending", None)
    assert rows[touched].skip_reason == "updated within the delay"
    send_pending(hub.app, csat)  # the send-time re-check discounts our writes too
    assert deliveries(hub.app, csat)[rated].state == "sent"


def test_one_scan_serves_every_survey_of_a_connection(hub):
    seeded = hub.sandbox.seeded
    with hub.app.app_context():
        csat = add_survey(hub.connection_id, "csat", 3)
        ces = add_survey(hub.connection_id, "ces", 7, delay_hours=24)
    hub.sandbox.app.extensions["sandbox"]["counts"].clear()
    with hub.app.app_context():
        reports = scan_connection(hub.connection_id)
    assert set(reports) == {hub.survey_id, csat, ces}
    counts = requests_made(hub)
    # One pass: the searches of a single scan, each requester looked up once.
    assert counts[SEARCH] == 1
    customers = {
        c["customer_id"]
        for t, c in hub.sandbox.org.conversations.items()
        if t in seeded.eligible or seeded.skipped.get(t) not in (None, "started by an agent")
    }
    assert counts[CUSTOMER_GET] <= len(customers)
    for survey_id in (hub.survey_id, csat):
        pending = {t for t, r in deliveries(hub.app, survey_id).items() if r.state == "pending"}
        assert set(seeded.eligible) <= pending
    # The 24-hour CES survey's window is the widest; the same pass covers it.
    assert reports[ces].seen >= reports[hub.survey_id].seen
    with hub.app.app_context():
        for survey in db.session.execute(select(Survey)).scalars():
            assert survey.last_scan_at is not None and survey.watermark is not None


def test_send_time_re_checks_are_batched_and_reuse_the_scanned_address(hub):
    with hub.app.app_context():
        csat = add_survey(hub.connection_id, "csat", 3)
        scan_connection(hub.connection_id)
        pending = (
            db.session.execute(select(Delivery.id).where(Delivery.state == "pending"))
            .scalars()
            .all()
        )
    hub.sandbox.app.extensions["sandbox"]["counts"].clear()
    with hub.app.app_context():
        states = send_deliveries(pending)
    assert set(states.values()) == {"sent"}
    counts = requests_made(hub)
    tickets = len(
        {
            deliveries(hub.app, s)[t].ticket_id
            for s in (hub.survey_id, csat)
            for t in deliveries(hub.app, s)
        }
    )
    assert counts.get(CONVERSATION_GET, 0) == math.ceil(len(pending) / 100) <= tickets
    assert CUSTOMER_GET not in counts
    assert len(hub.smtp.handler.messages) == len(pending)


def test_a_ticket_deleted_before_sending_is_skipped_with_the_others_sent(hub):
    seeded = hub.sandbox.seeded
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    gone = seeded.eligible[1]
    del hub.sandbox.org.conversations[gone]
    send_pending(hub.app, hub.survey_id)
    rows = deliveries(hub.app, hub.survey_id)
    assert (rows[gone].state, rows[gone].skip_reason) == ("skipped", "ticket deleted")
    assert all(rows[t].state == "sent" for t in seeded.eligible if t != gone)


def test_activity_seen_after_our_write_is_not_hidden_by_a_later_write(hub):
    seeded = hub.sandbox.seeded
    ticket = seeded.eligible[0]
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    rate_and_write_back(hub, ticket)
    # An agent replies after our note; a scan sees it; then our comment's note follows.
    hub.sandbox.org.conversations[ticket]["attributes"]["updatedAt"] = stamp(
        datetime.now(UTC) + timedelta(seconds=2)
    )
    with hub.app.app_context():
        ces = add_survey(hub.connection_id, "ces", 7)
        scan_survey(ces)
        assert deliveries(hub.app, ces)[ticket].skip_reason == "updated within the delay"
    row = deliveries(hub.app, hub.survey_id)[ticket]
    with hub.app.test_request_context():
        token = rating_token(row.id)
    hub.app.test_client().post(f"/r/{token}/comment", data={"comment": "Thanks"})
    with hub.app.app_context():
        for item in db.session.execute(select(WriteBack)).scalars().all():
            if item.state == "pending":
                assert run_write_back(item.id) == "done"
        csat = add_survey(hub.connection_id, "csat", 3)
        scan_survey(csat)
    assert deliveries(hub.app, csat)[ticket].skip_reason == "updated within the delay"


def test_surveys_with_different_delays_look_nobody_up_twice(hub):
    org = hub.sandbox.org
    agent = next(iter(org.users))
    # Resolved 30 hours ago: due for a 24-hour survey, not for the 48-hour one.
    between = [
        org.add_conversation(
            org.add_customer(f"Between {n}", [f"between{n}@example.com"]),
            assignee=agent,
            updated_ago=timedelta(hours=30),
            resolved_ago=timedelta(hours=30),
        )
        for n in range(5)
    ]
    with hub.app.app_context():
        ces = add_survey(hub.connection_id, "ces", 7, delay_hours=24)
        scan_connection(hub.connection_id)
    assert all(deliveries(hub.app, ces)[t].state == "pending" for t in between)
    assert not set(between) & set(deliveries(hub.app, hub.survey_id))
    hub.sandbox.app.extensions["sandbox"]["counts"].clear()
    with hub.app.app_context():
        scan_connection(hub.connection_id)  # the next tick: nothing new
    assert CUSTOMER_GET not in requests_made(hub)


def test_tickets_skipped_for_reasons_that_need_no_address_cost_no_look_up(hub):
    seeded = hub.sandbox.seeded
    hub.sandbox.app.extensions["sandbox"]["counts"].clear()
    with hub.app.app_context():
        scan_connection(hub.connection_id)
    needless = {"started by an agent", "wrong channel", "not resolved", "excluded tag"}
    needless |= {"no human assignee", "surveyed by the helpdesk", "updated within the delay"}
    org = hub.sandbox.org
    needed = {
        org.conversations[t]["customer_id"]
        for t in [*seeded.eligible, *seeded.skipped]
        if seeded.skipped.get(t) not in needless
    }
    assert requests_made(hub)[CUSTOMER_GET] == len(needed)


def test_a_listed_address_or_one_with_a_line_break_is_skipped_as_invalid(hub):
    org = hub.sandbox.org
    agent = next(iter(org.users))
    bad = {
        org.add_conversation(org.add_customer("Two", [address]), assignee=agent): address
        for address in (
            "postmaster,listed@example.com",
            "broken@example.com\nBcc: all@example.com",
            "Jane <named@example.com>",
        )
    }
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    rows = deliveries(hub.app, hub.survey_id)
    assert {rows[t].skip_reason for t in bad} == {"invalid email"}
    received = [m["To"].addresses[0].addr_spec for m in hub.smtp.handler.messages]
    assert not any(name in r for r in received for name in ("listed", "broken", "all@", "named"))


def test_a_new_score_while_a_write_back_runs_gets_its_own_write_back(hub):
    """The running write-back may carry the old score: the new one must not be lost."""
    from hub.models import WriteBack as WB

    seeded = hub.sandbox.seeded
    ticket = seeded.eligible[0]
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    row = deliveries(hub.app, hub.survey_id)[ticket]
    with hub.app.test_request_context():
        token = rating_token(row.id)
    client = hub.app.test_client()
    client.post(f"/r/{token}/9")
    with hub.app.app_context():
        (first,) = db.session.execute(select(WB)).scalars().all()
        first.state = "running"  # a worker claimed it and is posting the note
        db.session.commit()
        first_id = first.id
    client.post(f"/r/{token}/4")
    with hub.app.app_context():
        pending = db.session.execute(select(WB).where(WB.state == "pending")).scalars().all()
        assert [w.id for w in pending] != [first_id] and len(pending) == 1
        # The running one stops (a killed worker); the reconciler must not trip over the
        # newer pending one, and every other repair still happens.
        db.session.execute(
            update(WB)
            .where(WB.id == first_id)
            .values(updated_at=datetime.now(UTC) - timedelta(hours=2))
        )
        db.session.commit()
        done = reconcile()
        assert done["write_backs_released"] == 0
        assert db.session.get(WB, first_id).state == "superseded"
        assert run_write_back(pending[0].id) == "done"
    notes = hub.sandbox.state()["notes"][ticket]
    assert [n["body"].split(" from ")[0] for n in notes] == ["NPS 4/10 (detractor)"]


def test_a_batch_handed_back_to_urgent_work_keeps_its_place_and_markers(
    hub, redis_client, monkeypatch
):
    """Inside a worker, with a write-back waiting, a send job stops early: the rest goes
    back to the front of the sends queue, still marked, so nothing queues it twice."""
    import hub.pipeline.send as send
    from hub.jobs import WRITE_BACKS
    from hub.jobs import enqueued_key
    from hub.jobs import get_queue

    with hub.app.app_context():
        scan_survey(hub.survey_id)
        redis_client.flushdb()
        pending = [
            r.id for r in deliveries(hub.app, hub.survey_id).values() if r.state == "pending"
        ]
        monkeypatch.setattr(send, "YIELD_EVERY", 2)
        monkeypatch.setattr(send, "get_current_job", lambda: object())  # as in a worker
        get_queue(WRITE_BACKS).enqueue(print, "a waiting write-back")
        states = send.send_deliveries(pending)
        queued = get_queue(send.SENDS).jobs
    sent = [i for i in pending if states[i] == "sent"]
    rest = [i for i in pending if i not in sent]
    assert len(sent) == 2 and len(rest) == len(pending) - 2
    assert [job.args for job in queued] == [(rest,)]
    assert all(redis_client.exists(enqueued_key(f"send:{i}")) for i in rest)
    assert not any(redis_client.exists(enqueued_key(f"send:{i}")) for i in sent)


def test_a_look_back_previews_an_active_survey_but_never_reaches_a_real_scan(hub):
    """The settings page's dry run looks back N days on an active survey; a real scan
    given the same look-back still surveys only tickets resolved since activation."""
    with hub.app.app_context():
        survey = Survey(
            connection_id=hub.connection_id, metric="csat", scale=3, name="Fresh",
            settings={"company_name": "Acme"}, active=True,
        )  # fmt: skip
        now = datetime.now(UTC)
        survey.resolved_since = survey.watermark = survey.activated_at = now
        db.session.add(survey)
        db.session.commit()
        decided = []
        preview = scan_survey(
            survey.id, dry_run=True, lookback_days=30,
            on_decision=lambda ticket, reason: decided.append(reason),
        )  # fmt: skip
        assert preview.pending >= len(hub.sandbox.seeded.eligible)
        assert decided.count(None) == preview.pending
        assert scan_survey(survey.id, dry_run=True).seen == 0  # the next scan: nothing due
        scan_connection(hub.connection_id, survey_ids=[survey.id], lookback_days=30)
        assert deliveries(hub.app, survey.id) == {}


def test_each_delivery_records_the_link_to_its_conversation(hub):
    with hub.app.app_context():
        scan_connection(hub.connection_id)
        rows = db.session.execute(select(Delivery.ticket_id, Delivery.ticket_url)).all()
    conversations = hub.sandbox.org.conversations
    assert rows
    for ticket_id, url in rows:
        customer = conversations[ticket_id]["customer_id"]
        assert url == f"{hub.sandbox.url}/app/customers/{customer}/event/{ticket_id}"


def test_the_scan_lock_is_a_short_lease_renewed_while_tickets_arrive(hub, monkeypatch):
    from hub.jobs import redis_connection
    from hub.pipeline import scan

    leases = []

    def renew(key):
        before = redis_connection().ttl(key)
        real(key)
        leases.append((before, redis_connection().ttl(key)))

    real = scan._renew
    monkeypatch.setattr(scan, "LOCK_RENEW_SECONDS", 0.0)
    monkeypatch.setattr(scan, "_renew", renew)
    with hub.app.app_context():
        scan_connection(hub.connection_id)
        lock = f"surveyhub:scan-lock:connection:{hub.connection_id}"
        assert redis_connection().get(lock) is None  # released at the end
    # A killed worker's lock lapses in minutes, not the scan job's two hours; a live
    # scan keeps renewing it.
    assert leases and all(0 < after <= 300 for _, after in leases)
    assert all(before <= after for before, after in leases)
