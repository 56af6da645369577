"""The pipeline, step by step, against the sandbox and a real SMTP server."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy import update

from hub.extensions import db
from hub.links import rating_token
from hub.models import Delivery
from hub.models import Survey
from hub.models import WriteBack
from hub.models import utcnow
from hub.pipeline.activation import deactivate
from hub.pipeline.events import DUE_MARGIN
from hub.pipeline.recovery import reconcile
from hub.pipeline.reminders import send_reminders
from hub.pipeline.scan import scan_survey
from hub.pipeline.send import send_delivery
from hub.pipeline.writeback import run_write_back
from tests.pipeline.conftest import add_survey


def deliveries(app, survey_id):
    with app.app_context():
        rows = (
            db.session.execute(
                select(Delivery).where(Delivery.survey_id == survey_id).order_by(Delivery.id)
            )
            .scalars()
            .all()
        )
        return {row.ticket_id: row for row in rows}


def send_pending(app, survey_id):
    with app.app_context():
        for row in deliveries(app, survey_id).values():
            if row.state == "pending":
                send_delivery(row.id)


def test_scan_records_every_decision_with_its_reason(hub):
    with hub.app.app_context():
        report = scan_survey(hub.survey_id)
    rows = deliveries(hub.app, hub.survey_id)
    seeded = hub.sandbox.seeded
    assert {t for t, r in rows.items() if r.state == "pending"} == set(seeded.eligible)
    assert {t: r.skip_reason for t, r in rows.items() if r.state == "skipped"} == seeded.skipped
    assert report.pending == len(seeded.eligible)
    assert len(rows) == len(seeded.eligible) + len(seeded.skipped)  # not the one not due


def test_dry_run_lists_the_decisions_the_real_scan_makes(hub):
    with hub.app.app_context():
        previewed = {}
        scan_survey(
            hub.survey_id, dry_run=True, on_decision=lambda t, r: previewed.update({t.id: r})
        )
        assert deliveries(hub.app, hub.survey_id) == {}  # a dry run writes nothing
        decided = {}
        scan_survey(hub.survey_id, on_decision=lambda t, r: decided.update({t.id: r}))
    assert previewed == decided
    rows = deliveries(hub.app, hub.survey_id)
    assert {t: r.skip_reason for t, r in rows.items()} == decided


def test_a_second_scan_adds_nothing(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
        before = {t: r.state for t, r in deliveries(hub.app, hub.survey_id).items()}
        with db.session.begin():
            db.session.execute(update(Survey).values(watermark=utcnow() - timedelta(days=30)))
        report = scan_survey(hub.survey_id)
    assert report.already == len(before) and report.pending == 0
    assert {t: r.state for t, r in deliveries(hub.app, hub.survey_id).items()} == before


def test_each_eligible_requester_gets_one_email(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    send_pending(hub.app, hub.survey_id)  # nothing pending any more: nothing sent twice
    received = sorted(m["To"].addresses[0].addr_spec for m in hub.smtp.handler.messages)
    eligible = sorted(
        r.requester_email
        for t, r in deliveries(hub.app, hub.survey_id).items()
        if t in hub.sandbox.seeded.eligible
    )
    assert received == eligible
    assert all(
        r.state == "sent"
        for t, r in deliveries(hub.app, hub.survey_id).items()
        if t in hub.sandbox.seeded.eligible
    )
    with hub.app.app_context():
        row = deliveries(hub.app, hub.survey_id)[hub.sandbox.seeded.eligible[0]]
        assert send_delivery(row.id) == "sent"
    assert len(hub.smtp.handler.messages) == len(eligible)


def test_a_ticket_reopened_after_the_scan_is_skipped_at_send_time(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    reopened = hub.sandbox.seeded.eligible[2]
    hub.sandbox.org.conversations[reopened]["attributes"]["status"] = "open"
    send_pending(hub.app, hub.survey_id)
    row = deliveries(hub.app, hub.survey_id)[reopened]
    assert (row.state, row.skip_reason) == ("skipped", "not resolved")


def rated_delivery(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    conversation = hub.sandbox.seeded.eligible[0]
    row = deliveries(hub.app, hub.survey_id)[conversation]
    with hub.app.test_request_context():
        token = rating_token(row.id)
    return conversation, row, token


def run_write_backs(hub):
    with hub.app.app_context():
        for item in db.session.execute(select(WriteBack)).scalars().all():
            if item.state == "pending":
                assert run_write_back(item.id) == "done"


def test_a_quick_comment_lands_in_the_same_note_as_the_score(hub):
    conversation, row, token = rated_delivery(hub)
    client = hub.app.test_client()
    client.post(f"/r/{token}/9")
    client.post(f"/r/{token}/comment", data={"comment": "Fast and friendly"})
    run_write_backs(hub)
    state = hub.sandbox.state()
    assert [n["body"] for n in state["notes"][conversation]] == [
        f'NPS 9/10 (promoter) from {row.requester_email} — "Fast and friendly" — via SurveyHub'
    ]
    assert state["custom"][conversation] == {"surveyhubNpsScoreNum": 9}


def test_a_later_comment_follows_in_a_second_note(hub):
    conversation, row, token = rated_delivery(hub)
    client = hub.app.test_client()
    client.post(f"/r/{token}/6")
    run_write_backs(hub)
    client.post(f"/r/{token}/comment", data={"comment": "Took a while"})
    run_write_backs(hub)
    email = row.requester_email
    assert [n["body"] for n in hub.sandbox.state()["notes"][conversation]] == [
        f"NPS 6/10 (detractor) from {email} — via SurveyHub",
        f'NPS 6/10 (detractor) from {email} — "Took a while" — via SurveyHub',
    ]


def test_the_score_waits_a_grace_time_for_a_comment(hub):
    hub.app.config["HUB_WRITEBACK_GRACE"] = 120
    conversation, row, token = rated_delivery(hub)
    hub.app.test_client().post(f"/r/{token}/9")
    with hub.app.app_context():
        item = db.session.execute(select(WriteBack)).scalar_one()
        assert 110 < (item.next_attempt_at - utcnow()).total_seconds() <= 120
        assert run_write_back(item.id) == "pending"  # not due yet
    assert conversation not in hub.sandbox.state()["notes"]


def rate(hub, value=9):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    conversation = hub.sandbox.seeded.eligible[0]
    row = deliveries(hub.app, hub.survey_id)[conversation]
    with hub.app.test_request_context():
        token = rating_token(row.id)
    hub.app.test_client().post(f"/r/{token}/{value}")
    with hub.app.app_context():
        return conversation, db.session.execute(select(WriteBack.id)).scalar_one()


def test_a_write_back_retried_after_an_applied_502_posts_one_note(hub):
    conversation, write_back_id = rate(hub)
    hub.sandbox.faults(apply_then_fail=[502])
    with hub.app.app_context():
        assert run_write_back(write_back_id) == "pending"
        item = db.session.get(WriteBack, write_back_id)
        assert "502" in item.last_error
        item.next_attempt_at = None
        db.session.commit()
        assert run_write_back(write_back_id) == "done"
    assert len(hub.sandbox.state()["notes"][conversation]) == 1


def test_a_rate_limited_write_back_waits_for_the_reset(hub):
    conversation, write_back_id = rate(hub)
    hub.sandbox.faults(burst_429=10, reset_in=120)
    with hub.app.app_context():
        assert run_write_back(write_back_id) == "pending"
        item = db.session.get(WriteBack, write_back_id)
        wait = (item.next_attempt_at - utcnow()).total_seconds()
        assert 60 < wait <= 121
        assert "rate limit" in item.last_error.lower()


def test_reconciler_turns_interrupted_sends_into_unknown_and_requeues_pending(hub, redis_client):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
        redis_client.flushdb()  # the jobs are gone, the rows are not
        rows = list(deliveries(hub.app, hub.survey_id).values())
        pending = [r for r in rows if r.state == "pending"]
        db.session.execute(
            update(Delivery)
            .where(Delivery.id == pending[0].id)
            .values(state="sending", updated_at=utcnow() - timedelta(hours=1))
        )
        db.session.commit()
        done = reconcile()
    assert done["sending_to_unknown"] == 1
    assert done["sends"] == len(pending) - 1
    # One send job re-checks them all together, on the sends queue.
    assert redis_client.llen("rq:queue:sends") == 1
    assert deliveries(hub.app, hub.survey_id)[pending[0].ticket_id].state == "unknown"


def test_smtp_down_then_back_loses_nothing(hub):
    port = hub.app.config["SMTP_PORT"]
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    hub.app.config["SMTP_PORT"] = 9  # nothing listens there
    send_pending(hub.app, hub.survey_id)
    rows = deliveries(hub.app, hub.survey_id)
    waiting = [r for t, r in rows.items() if t in hub.sandbox.seeded.eligible]
    assert all(r.state == "pending" and r.next_attempt_at and "SMTP" in r.error for r in waiting)
    hub.app.config["SMTP_PORT"] = port
    with hub.app.app_context():
        db.session.execute(update(Delivery).values(next_attempt_at=None))
        db.session.commit()
    send_pending(hub.app, hub.survey_id)
    assert len(hub.smtp.handler.messages) == len(hub.sandbox.seeded.eligible)


def test_deactivation_cancels_unsent_deliveries(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
        cancelled = deactivate(db.session.get(Survey, hub.survey_id))
    assert cancelled == len(hub.sandbox.seeded.eligible)
    send_pending(hub.app, hub.survey_id)
    assert hub.smtp.handler.messages == []


def test_one_reminder_to_those_who_did_not_answer(hub):
    with hub.app.app_context():
        survey = db.session.get(Survey, hub.survey_id)
        survey.settings = dict(survey.settings, reminder_days=3)
        db.session.commit()
        scan_survey(hub.survey_id)
    send_pending(hub.app, hub.survey_id)
    rate_conversation = hub.sandbox.seeded.eligible[0]
    with hub.app.app_context():
        row = deliveries(hub.app, hub.survey_id)[rate_conversation]
        with hub.app.test_request_context():
            token = rating_token(row.id)
        hub.app.test_client().post(f"/r/{token}/9")
        db.session.execute(update(Delivery).values(sent_at=utcnow() - timedelta(days=4)))
        db.session.commit()
        before = len(hub.smtp.handler.messages)
        first = send_reminders()
        second = send_reminders()
    eligible = len(hub.sandbox.seeded.eligible)
    assert (first, second) == (eligible - 1, 0)
    reminders = hub.smtp.handler.messages[before:]
    assert len(reminders) == eligible - 1
    subjects = {m["Subject"] for m in reminders}
    assert subjects == {"Reminder: How did we do?", "Erinnerung: Wie waren wir?"}


def test_csat_and_ces_run_side_by_side_on_one_connection(hub):
    with hub.app.app_context():
        csat = add_survey(hub.connection_id, "csat", 3)
        ces = add_survey(hub.connection_id, "ces", 7)
        for survey_id in (hub.survey_id, csat, ces):
            scan_survey(survey_id)
    for survey_id in (hub.survey_id, csat, ces):
        send_pending(hub.app, survey_id)
    # CSAT and CES have no cooldown: the customer's second ticket is surveyed too.
    per_survey = len(hub.sandbox.seeded.eligible)
    assert len(hub.smtp.handler.messages) == per_survey + 2 * (per_survey + 1)
    subjects = {re.sub(r"\s+", " ", m["Subject"]) for m in hub.smtp.handler.messages}
    assert subjects == {"How did we do?", "Wie waren wir?"}


def test_a_webhook_resolution_asks_for_a_scan_when_the_ticket_is_due(hub, redis_client):
    from hub.helpdesk import TicketEvent
    from hub.models import Connection

    resolved = utcnow() - timedelta(hours=49)
    with hub.app.app_context():
        connection = db.session.get(Connection, hub.connection_id)
        hub.app.extensions["hub"].registry.ticket_resolved(
            connection, TicketEvent("evt-1", "conv-x", resolved)
        )
        survey = db.session.get(Survey, hub.survey_id)
        due = resolved + timedelta(hours=48) + DUE_MARGIN
        assert abs((survey.scan_due_at - due).total_seconds()) < 1
        redis_client.flushdb()
        assert reconcile()["scans"] == 1
        assert db.session.get(Survey, hub.survey_id).scan_due_at is None


def test_the_active_scheduler_starts_a_due_scan_at_its_next_tick(hub, redis_client):
    from hub.scheduler import Scheduler

    with hub.app.app_context():
        survey = db.session.get(Survey, hub.survey_id)
        survey.scan_due_at = utcnow() + timedelta(minutes=5)
        db.session.commit()
    redis_client.flushdb()
    scheduler = Scheduler(hub.app)
    assert scheduler.enqueue_due_scans() == 0  # not due yet
    with hub.app.app_context():
        db.session.get(Survey, hub.survey_id).scan_due_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert scheduler.enqueue_due_scans() == 1  # no waiting for the reconciler
    assert redis_client.llen("rq:queue:scans") == 1
    with hub.app.app_context():
        assert db.session.get(Survey, hub.survey_id).scan_due_at is None


def test_a_changed_score_makes_one_note_with_the_final_score(hub):
    conversation, row, token = rated_delivery(hub)
    client = hub.app.test_client()
    client.post(f"/r/{token}/9")
    client.post(f"/r/{token}/7")
    run_write_backs(hub)
    assert [n["body"] for n in hub.sandbox.state()["notes"][conversation]] == [
        f"NPS 7/10 (passive) from {row.requester_email} — via SurveyHub"
    ]


def test_a_scanners_clicks_are_not_written_back_until_the_person_confirms(hub):
    conversation, row, token = rated_delivery(hub)
    client = hub.app.test_client()
    for score in (0, 5, 10):
        client.post(f"/r/{token}/{score}", data={"auto": "1"})
    with hub.app.app_context():
        (item,) = db.session.execute(select(WriteBack)).scalars().all()
        assert run_write_back(item.id) == "pending"
        assert "scanner" in db.session.get(WriteBack, item.id).last_error
    assert conversation not in hub.sandbox.state()["notes"]
    client.post(f"/r/{token}/10")  # the person presses the button on the same score
    run_write_backs(hub)
    assert [n["body"] for n in hub.sandbox.state()["notes"][conversation]] == [
        f"NPS 10/10 (promoter) from {row.requester_email} — via SurveyHub"
    ]


def test_without_look_back_only_tickets_resolved_after_activation_count(hub):
    org = hub.sandbox.org
    person = org.add_customer("Timely", ["timely@example.com"])
    agent = next(iter(org.users))
    before = org.add_conversation(
        person, assignee=agent, resolved_ago=timedelta(hours=51), updated_ago=timedelta(hours=51)
    )
    after = org.add_conversation(
        person, assignee=agent, resolved_ago=timedelta(hours=49), updated_ago=timedelta(hours=49)
    )
    with hub.app.app_context():
        survey_id = add_survey(hub.connection_id, "csat", 3)
        # As if it had been activated (without look-back) 50 hours ago.
        survey = db.session.get(Survey, survey_id)
        survey.resolved_since = survey.watermark = utcnow() - timedelta(hours=50)
        db.session.commit()
        since = survey.resolved_since
        scan_survey(survey_id)
        scan_survey(survey_id)  # the watermark never moves back to let older ones in
        rows = deliveries(hub.app, survey_id)
    assert after in rows and before not in rows
    assert all(row.resolved_at >= since for row in rows.values())


def test_permanent_and_uncertain_smtp_outcomes(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
    rows = [
        r for t, r in deliveries(hub.app, hub.survey_id).items() if t in hub.sandbox.seeded.eligible
    ]
    hub.smtp.handler.reply = "550 5.1.1 No such mailbox"
    with hub.app.app_context():
        assert send_delivery(rows[0].id) == "failed"
    assert (
        "550 5.1.1 No such mailbox" in deliveries(hub.app, hub.survey_id)[rows[0].ticket_id].error
    )

    from hub.mail import Mailer
    from hub.mail import UncertainMailError

    def broken(self, message):
        raise UncertainMailError("The connection broke while sending")

    hub.smtp.handler.reply = "250 OK"
    original = Mailer.send
    Mailer.send = broken
    try:
        with hub.app.app_context():
            assert send_delivery(rows[1].id) == "unknown"
            assert send_delivery(rows[1].id) == "unknown"  # never tried again
    finally:
        Mailer.send = original
    assert hub.smtp.handler.messages == []


def test_a_mail_server_that_never_comes_back_is_given_up(hub):
    from hub.pipeline.send import MAX_ATTEMPTS

    with hub.app.app_context():
        scan_survey(hub.survey_id)
        row = deliveries(hub.app, hub.survey_id)[hub.sandbox.seeded.eligible[0]]
        hub.app.config["SMTP_PORT"] = 9
        db.session.execute(
            update(Delivery).where(Delivery.id == row.id).values(attempts=MAX_ATTEMPTS - 1)
        )
        db.session.commit()
        assert send_delivery(row.id) == "failed"
        assert "Gave up after" in db.session.get(Delivery, row.id).error


def test_a_delivery_recorded_after_deactivation_is_cancelled_not_sent(hub):
    with hub.app.app_context():
        scan_survey(hub.survey_id)
        survey = db.session.get(Survey, hub.survey_id)
        survey.active = False  # as if deactivated while that scan ran
        db.session.commit()
    send_pending(hub.app, hub.survey_id)
    states = {
        r.state
        for t, r in deliveries(hub.app, hub.survey_id).items()
        if t in hub.sandbox.seeded.eligible
    }
    assert states == {"cancelled"}
    assert hub.smtp.handler.messages == []
