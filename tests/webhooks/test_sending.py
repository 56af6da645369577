"""Webhooks end to end against a real HTTP receiver: signatures, filters, retries,
disabling, the outbox and its reconciler, the Slack format."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from hub.crypto import Vault
from hub.extensions import db
from hub.jobs import DEFAULT
from hub.jobs import get_queue
from hub.models import Delivery
from hub.models import Rating
from hub.models import Role
from hub.models import UserStatus
from hub.models import utcnow
from hub.ratings import record_comment
from hub.ratings import record_score
from hub.webhooks.events import record_event
from hub.webhooks.models import WebhookAttempt
from hub.webhooks.models import WebhookEvent
from hub.webhooks.models import WebhookMessage
from hub.webhooks.models import WebhookSubscription
from hub.webhooks.sender import reconcile_webhooks
from hub.webhooks.sender import send_message
from tests.web.conftest import add_person
from tests.web.conftest import signed_in
from tests.web.test_operations import run_burst_worker
from tests.webhooks.conftest import add_deliveries
from tests.webhooks.conftest import pending_messages
from tests.webhooks.conftest import send_all
from tests.webhooks.conftest import subscribe


def independent_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks' signature, computed here from the specification alone."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def rate(app, delivery_id: int, value: int, comment: str = "") -> int:
    with app.app_context():
        delivery = db.session.get(Delivery, delivery_id)
        rating, _ = record_score(delivery, value, 11)
        if comment:
            record_comment(rating, comment)
        return rating.id


def test_signatures_verify_with_an_independent_implementation(app, receiver):
    _, secret = subscribe(app, receiver.url + "/hook")
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 3)
    assert send_all(app) == ["done"]

    (got,) = receiver.requests
    assert got.path == "/hook"
    assert got.headers["Content-Type"] == "application/json"
    msg_id, timestamp = got.headers["webhook-id"], got.headers["webhook-timestamp"]
    assert msg_id.startswith("msg_") and timestamp.isdigit()
    signature = got.headers["webhook-signature"]
    assert signature == independent_signature(secret, msg_id, timestamp, got.body)
    # The check can fail: another secret, or a changed body, does not verify.
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    assert signature != independent_signature(other, msg_id, timestamp, got.body)
    assert signature != independent_signature(secret, msg_id, timestamp, got.body + b" ")
    # And the reference library agrees.
    assert Webhook(secret).verify(got.body, got.headers)["type"] == "rating.created"

    body = got.json
    assert body["type"] == "rating.created"
    data = body["data"]
    assert data["rating"]["value"] == 3 and data["rating"]["group"] == "detractor"
    assert data["survey"]["metric"] == "nps"
    assert data["ticket"]["id"] == "conv-0"
    assert data["customer"]["email"] == "customer0@example.com"
    assert data["agent"]["id"] == "agent-7"


def test_the_event_is_sent_by_the_worker_after_the_commit_and_only_once(app, receiver):
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 9, comment="Fast and friendly")
    with app.app_context():
        assert len(get_queue(DEFAULT).jobs) == 2  # rating.created and comment.created
    run_burst_worker(app, DEFAULT)
    kinds = sorted(request.json["type"] for request in receiver.requests)
    assert kinds == ["comment.created", "rating.created"]
    with app.app_context():
        message_ids = list(db.session.execute(select(WebhookMessage.id)).scalars())
        states = {send_message(message_id) for message_id in message_ids}  # run again
        attempts = db.session.execute(select(WebhookAttempt)).scalars().all()
    assert states == {"done"}
    assert len(receiver.requests) == 2  # idempotent per event and subscription
    assert len(attempts) == 2 and all(a.succeeded and a.status_code == 200 for a in attempts)
    comment_body = next(r.json for r in receiver.requests if r.json["type"] == "comment.created")
    assert comment_body["data"]["rating"]["comment"] == "Fast and friendly"


def test_an_event_rolled_back_with_its_change_is_neither_stored_nor_queued(app, receiver):
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
        delivery = db.session.get(Delivery, delivery_id)
        record_event("delivery.sent", {"delivery_id": delivery_id}, survey=delivery.survey)
        db.session.rollback()
        assert db.session.execute(select(WebhookEvent)).scalars().all() == []
        assert get_queue(DEFAULT).count == 0
        delivery = db.session.get(Delivery, delivery_id)
        record_event("delivery.sent", {"delivery_id": delivery_id}, survey=delivery.survey)
        assert get_queue(DEFAULT).count == 0  # not before the commit
        db.session.commit()
        assert get_queue(DEFAULT).count == 1


def test_the_reconciler_enqueues_messages_left_behind(app, receiver, redis_client):
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 10)
    redis_client.flushdb()  # Redis lost the job; the database did not
    with app.app_context():
        # A worker killed while sending left another message in `sending`.
        (message_id,) = pending_messages()
        message = db.session.get(WebhookMessage, message_id)
        message.state, message.updated_at = "sending", utcnow() - timedelta(hours=1)
        db.session.commit()
        assert reconcile_webhooks() == {"webhooks_released": 1, "webhooks": 1}
        assert get_queue(DEFAULT).count == 1
        assert reconcile_webhooks()["webhooks"] == 0  # queued once, not twice
    run_burst_worker(app, DEFAULT)
    assert [r.json["data"]["rating"]["value"] for r in receiver.requests] == [10]


def test_a_failing_subscriber_is_retried_then_disabled_and_admins_told(
    mail_app, receiver, smtp_server
):
    app = mail_app
    receiver.status = 500
    subscription_id, _ = subscribe(app, receiver.url)
    admin_id = add_person(app, "ann@example.com", Role.ADMIN.value)
    add_person(app, "bob@example.com", Role.ADMIN.value)
    add_person(app, "alex@example.com", helpdesk_user_id="agent-7")  # an agent: not told
    with app.app_context():
        add_person(app, "old@example.com", Role.ADMIN.value)
        from hub.models import User

        old = db.session.execute(select(User).where(User.email == "old@example.com")).scalar()
        old.status = UserStatus.ARCHIVED.value
        db.session.commit()
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 2)
    start = utcnow()
    with app.app_context():
        (message_id,) = pending_messages()
        assert send_message(message_id, now=start) == "pending"
        message = db.session.get(WebhookMessage, message_id)
        assert message.next_attempt_at == start + timedelta(seconds=30)
        # Backoff: not due yet, nothing is sent.
        assert send_message(message_id, now=start + timedelta(seconds=10)) == "pending"
        assert len(receiver.requests) == 1
        # The reconciler hands it over once it is due.
        assert reconcile_webhooks(now=start + timedelta(seconds=31))["webhooks"] == 1
        assert send_message(message_id, now=start + timedelta(seconds=31)) == "pending"
        message = db.session.get(WebhookMessage, message_id)
        assert message.next_attempt_at == start + timedelta(seconds=91)  # then 1 minute
        assert send_message(message_id, now=start + timedelta(hours=12)) == "pending"
        assert db.session.get(WebhookSubscription, subscription_id).active
        assert smtp_server.handler.envelopes == []
        # A day after the first failure, with no success between: disabled.
        assert send_message(message_id, now=start + timedelta(hours=24, minutes=1)) == "failed"
        subscription = db.session.get(WebhookSubscription, subscription_id)
        assert not subscription.active
        assert "every delivery failed" in subscription.disabled_reason
        assert "HTTP 500" in subscription.disabled_reason
    assert len(receiver.requests) == 4
    told = sorted(envelope.rcpt_tos[0] for envelope in smtp_server.handler.envelopes)
    assert told == ["ann@example.com", "bob@example.com"]
    message = smtp_server.handler.messages[0]
    assert message["Subject"] == "A SurveyHub webhook was disabled"
    text = message.get_content()
    assert f"#{subscription_id} to 127.0.0.1" in text
    assert receiver.url not in text  # a subscriber's URL may be a credential (Slack's)

    # The log shows each attempt: time, event, status, duration.
    page = signed_in(app, admin_id).get(f"/webhooks/{subscription_id}").text
    assert page.count("HTTP 500") >= 4 and page.count("rating.created") >= 4
    assert (start + timedelta(hours=12)).strftime("%Y-%m-%d %H:%M:%S") in page
    assert " ms</td>" in page and "Disabled" in page
    # A disabled subscription gets nothing new.
    with app.app_context():
        (second,) = add_deliveries(1)
    rate(app, second, 1)
    with app.app_context():
        assert pending_messages() == []


def test_a_success_clears_the_failure_record(app, receiver):
    receiver.status = 503
    subscription_id, _ = subscribe(app, receiver.url)
    with app.app_context():
        first, second = add_deliveries(2)
    rate(app, first, 5)
    start = utcnow()
    send_all(app, now=start)
    receiver.status = 204
    rate(app, second, 6)
    assert sorted(send_all(app, now=start + timedelta(hours=20))) == ["done", "done"]
    receiver.status = 500
    with app.app_context():
        (third,) = add_deliveries(1)
    rate(app, third, 4)
    send_all(app, now=start + timedelta(hours=30))  # a new failure starts a new day
    with app.app_context():
        subscription = db.session.get(WebhookSubscription, subscription_id)
        assert subscription.active
        assert subscription.failing_since == start + timedelta(hours=30)


def test_a_detractors_only_subscription_receives_detractors_only(app, receiver):
    subscribe(app, receiver.url + "/detractors", metric="nps", score_group="detractor")
    subscribe(app, receiver.url + "/all")
    with app.app_context():
        ids = add_deliveries(4)
    for delivery_id, value in zip(ids, [3, 8, 10, 0], strict=True):
        rate(app, delivery_id, value)
    send_all(app)
    by_path: dict[str, list[int]] = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(request.json["data"]["rating"]["value"])
    assert sorted(by_path["/all"]) == [0, 3, 8, 10]
    assert sorted(by_path["/detractors"]) == [0, 3]


def test_a_slack_subscription_gets_a_detractor_alert_with_comment_agent_and_ticket_link(
    app, receiver
):
    add_person(app, "alex@example.com", helpdesk_user_id="agent-7")
    subscribe(
        app,
        receiver.url,
        events=["comment.created"],
        metric="nps",
        score_group="detractor",
        format="slack",
    )
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
        # The link the connector gave at the scan (tests/kustomer: Kustomer's form).
        db.session.get(Delivery, delivery_id).ticket_url = "https://acme.example/t/conv-0"
        db.session.commit()
    rate(app, delivery_id, 2, comment="Nobody answered <@channel> for a week")
    assert send_all(app) == ["done"]
    (got,) = receiver.requests
    body = got.json
    assert set(body) == {"text", "blocks"}
    shown = body["text"] + str(body["blocks"])
    assert "NPS 2/10 (detractor)" in shown
    assert "Nobody answered &lt;@channel&gt; for a week" in shown  # no mention from a comment
    assert "Agent: Alex" in shown
    assert "<https://acme.example/t/conv-0|Ticket conv-0>" in shown


def test_a_scanners_clicks_send_nothing_and_the_persons_click_is_created(app, receiver):
    subscribe(app, receiver.url, events=["rating.created", "rating.updated"])
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
        delivery = db.session.get(Delivery, delivery_id)
        start = utcnow()
        # A mail scanner opens every score link within a second: flagged; what its first
        # click queued is not sent.
        record_score(delivery, 10, 11, now=start, automatic=True)
        rating, _ = record_score(delivery, 0, 11, now=start + timedelta(seconds=1), automatic=True)
        assert rating.suspected_scanner
        # The person's own click is the rating's creation; a later change its update.
        record_score(delivery, 2, 11, now=start + timedelta(minutes=5))
        record_score(delivery, 3, 11, now=start + timedelta(minutes=6))
    send_all(app)
    got = [(r.json["type"], r.json["data"]["rating"]["value"]) for r in receiver.requests]
    assert got == [("rating.created", 2), ("rating.updated", 3)]


def test_a_secret_the_hub_cannot_decrypt_is_a_logged_failure(app, receiver):
    subscription_id, _ = subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 9)
    # HUB_SECRET_KEY replaced without keeping the old one in HUB_OLD_SECRET_KEYS.
    app.extensions["hub"].vault = Vault("another-secret-key-0123456789abcdef")
    start = utcnow()
    with app.app_context():
        (message_id,) = pending_messages()
        assert send_message(message_id, now=start) == "pending"
        (attempt,) = db.session.execute(select(WebhookAttempt)).scalars().all()
        assert "cannot be decrypted" in attempt.error and not attempt.succeeded
        assert send_message(message_id, now=start + timedelta(hours=25)) == "failed"
        assert not db.session.get(WebhookSubscription, subscription_id).active
    assert receiver.requests == []  # nothing unsigned ever leaves


def test_a_redirect_is_not_followed_and_counts_as_a_failure(app, receiver):
    receiver.status, receiver.location = 302, "http://169.254.169.254/latest/meta-data"
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 7)
    assert send_all(app) == ["pending"]
    assert len(receiver.requests) == 1
    with app.app_context():
        (attempt,) = db.session.execute(select(WebhookAttempt)).scalars().all()
        assert attempt.status_code == 302 and not attempt.succeeded
        assert "redirects are not followed" in attempt.error


def test_the_address_is_checked_again_at_send_time(app, receiver):
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 7)
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = []  # no longer allow-listed
    assert send_all(app) == ["pending"]
    assert receiver.requests == []
    with app.app_context():
        (attempt,) = db.session.execute(select(WebhookAttempt)).scalars().all()
        assert attempt.status_code is None and "loopback" in attempt.error


def test_an_erased_rating_is_not_sent(app, receiver):
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rating_id = rate(app, delivery_id, 7)
    with app.app_context():
        from hub.models import WriteBack

        db.session.execute(WriteBack.__table__.delete())
        db.session.delete(db.session.get(Rating, rating_id))
        db.session.commit()
    assert send_all(app) == ["cancelled"]
    assert receiver.requests == []


@pytest.mark.parametrize("value", [3])
def test_a_scanners_clicks_send_nothing(app, receiver, value):
    subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
        delivery = db.session.get(Delivery, delivery_id)
        record_score(delivery, value, 11, automatic=True)
        record_score(delivery, 10, 11, automatic=True)  # a burst: a scanner's
        assert db.session.execute(select(Rating)).scalar().suspected_scanner
    assert send_all(app) == ["cancelled"]
    assert receiver.requests == []


def test_the_documented_verification_accepts_the_hubs_requests(app, receiver):
    from tests.conftest import ROOT

    text = (ROOT / "docs" / "webhooks.md").read_text()
    code = next(block for block in text.split("```python")[1:] if "def verify" in block)
    namespace: dict = {}
    exec(code.split("```")[0], namespace)
    _, secret = subscribe(app, receiver.url)
    with app.app_context():
        (delivery_id,) = add_deliveries(1)
    rate(app, delivery_id, 9)
    send_all(app)
    (got,) = receiver.requests
    headers = {name.lower(): value for name, value in got.headers.items()}
    assert namespace["verify"](secret, headers, got.body)
    assert not namespace["verify"](secret, headers, got.body.replace(b"9", b"1"))
