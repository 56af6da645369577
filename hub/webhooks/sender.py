"""Sending webhook messages: the RQ job, retries with backoff, disabling, the reconciler.

A message is claimed (pending → sending) before it is sent, so a job run twice, or two
workers, send it once; the outcome of every try is logged. A subscriber that fails for
a day without a single success is disabled and the admins are told by email.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta

import requests
from flask import current_app
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update

from hub.crypto import SecretsUnreadable
from hub.extensions import db
from hub.jobs import DEFAULT
from hub.jobs import enqueue_once
from hub.jobs import forget_enqueued
from hub.models import utcnow
from hub.urls import UnsafeUrl
from hub.urls import check_url
from hub.urls import guarded_session
from hub.webhooks.models import MessageState
from hub.webhooks.models import WebhookAttempt
from hub.webhooks.models import WebhookMessage
from hub.webhooks.models import WebhookSubscription
from hub.webhooks.payloads import Gone
from hub.webhooks.payloads import event_body
from hub.webhooks.signing import signed_headers
from hub.webhooks.slack import slack_body

log = logging.getLogger(__name__)

#: Seconds to connect, and to wait for the answer.
TIMEOUT = (5, 15)
#: A subscriber failing this long without one success is disabled.
DISABLE_AFTER = timedelta(days=1)
#: One message is given up this long after its event (a subscriber that fails now and
#: then is not disabled, but its messages do not wait for ever).
GIVE_UP_AFTER = timedelta(days=2)
#: Messages the reconciler hands to workers per round.
BATCH = 500
USER_AGENT = "SurveyHub-Webhooks/1"


def marker(message_id: int) -> str:
    return f"webhook:{message_id}"


def enqueue_message(message_id: int) -> bool:
    """Hand one due message to a worker (once, until its job starts)."""
    return enqueue_once(
        send_message, marker(message_id), message_id, queue=DEFAULT, job_timeout=120
    )


#: The attempt's error when the signing secret was made with a key the hub no longer has.
UNREADABLE_SECRET = (
    "The signing secret cannot be decrypted with the current HUB_SECRET_KEY: put the old "
    "key in HUB_OLD_SECRET_KEYS and run `surveyhub rotate-secrets`."
)


def retry_delay(attempts: int) -> timedelta:
    """Backoff between tries: 30 s, 1, 2, 4 … minutes, at most an hour."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


@dataclass
class Outcome:
    """How one HTTP try ended."""

    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.ok:
            return f"HTTP {self.status_code}"
        if self.status_code is not None:
            return f"HTTP {self.status_code}" + (f": {self.error}" if self.error else "")
        return self.error


def post(url: str, body: str, headers: dict[str, str]) -> Outcome:
    """POST `body` to `url` through the address guard, without following redirects."""
    allowed = current_app.config["HUB_ALLOWED_HELPDESK_URLS"]
    started = time.monotonic()
    status, error = None, ""
    session = guarded_session(url, allowed)
    try:
        check_url(url, allowed, resolve=False)  # the connection checks the address
        response = session.post(
            url,
            data=body.encode(),
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
            timeout=TIMEOUT,
            allow_redirects=False,
            stream=True,  # the answer's body is not needed: do not download it
        )
        status = response.status_code
        if response.is_redirect:
            # A redirect could lead anywhere (an internal address): never followed.
            error = "redirects are not followed"
        response.close()
    except UnsafeUrl as exc:
        error = str(exc)
    except requests.Timeout:
        error = f"No answer within {TIMEOUT[1]} seconds."
    except requests.RequestException as exc:
        error = f"Could not connect: {_reason(exc)}"
    finally:
        session.close()
    return Outcome(status, error, int((time.monotonic() - started) * 1000))


def _reason(exc: BaseException) -> str:
    """The operating system's words for a failed connection ("Connection refused"),
    without the URL (it may hold a token)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def send_message(message_id: int, now: datetime | None = None) -> str:
    """Send one message to its subscriber once; return its state after.

    `now` is the clock retries and disabling are measured with (tests pass their own);
    the signature's timestamp is always the real time, which receivers check.
    """
    forget_enqueued(marker(message_id))
    now = now or utcnow()
    claimed = db.session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.id == message_id,
            WebhookMessage.state == MessageState.PENDING.value,
            or_(WebhookMessage.next_attempt_at.is_(None), WebhookMessage.next_attempt_at <= now),
        )
        .values(
            state=MessageState.SENDING.value,
            attempts=WebhookMessage.attempts + 1,
            updated_at=now,
        )
    )
    db.session.commit()
    message = db.session.get(WebhookMessage, message_id)
    if claimed.rowcount != 1:
        return message.state if message else "missing"
    try:
        return _deliver(message, now)
    except Exception as exc:  # a bug: show it on the message, try again later
        db.session.rollback()
        log.exception("Webhook message %s failed unexpectedly", message_id)
        message = db.session.get(WebhookMessage, message_id)
        return _settle(
            message,
            MessageState.PENDING,
            last_error=f"Unexpected error: {type(exc).__name__}",
            next_attempt_at=now + retry_delay(message.attempts),
        )


def _deliver(message: WebhookMessage, now: datetime) -> str:
    subscription = message.subscription
    if not subscription.active:
        return _settle(message, MessageState.FAILED, last_error="The subscription is disabled.")
    try:
        body = event_body(message.event)
    except Gone as exc:
        return _settle(message, MessageState.CANCELLED, last_error=str(exc))
    if subscription.format == "slack":
        body = slack_body(body)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        secret = subscription.get_secret()
    except SecretsUnreadable:
        # Counted as a failed try: logged, retried, and the subscription disabled after
        # a day (with the email) rather than retried unseen for ever.
        outcome = Outcome(None, UNREADABLE_SECRET, 0)
    else:
        headers = signed_headers(secret, message.event.uid, datetime.now(UTC), text)
        outcome = post(subscription.url, text, headers)
    db.session.add(
        WebhookAttempt(
            subscription_id=subscription.id,
            message_id=message.id,
            event_type=message.event.type,
            attempted_at=now,
            status_code=outcome.status_code,
            error=outcome.error[:1000],
            duration_ms=outcome.duration_ms,
            succeeded=outcome.ok,
        )
    )
    summary = outcome.describe()[:300]
    if outcome.ok:
        # Set in one statement each: workers sending to one subscriber at once must not
        # undo each other's news.
        db.session.execute(
            update(WebhookSubscription)
            .where(WebhookSubscription.id == subscription.id)
            .values(failing_since=None, last_attempt_at=now, last_outcome=summary)
        )
        return _settle(message, MessageState.DONE, last_error="", done_at=now)
    log.info("Webhook message %s to subscription %s: %s", message.id, subscription.id, summary)
    db.session.execute(
        update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription.id)
        .values(
            failing_since=func.coalesce(WebhookSubscription.failing_since, now),
            last_attempt_at=now,
            last_outcome=summary,
        )
    )
    if _disable_if_failing_for_a_day(subscription.id, now, summary):
        state = _settle(
            message, MessageState.FAILED, last_error=f"{summary} (the subscription was disabled)"
        )
        from hub.webhooks.alerts import tell_admins_disabled

        tell_admins_disabled(db.session.get(WebhookSubscription, subscription.id))
        return state
    if now - message.event.created_at >= GIVE_UP_AFTER:
        return _settle(message, MessageState.FAILED, last_error=f"Gave up: {summary}")
    return _settle(
        message,
        MessageState.PENDING,
        last_error=summary,
        next_attempt_at=now + retry_delay(message.attempts),
    )


def _disable_if_failing_for_a_day(subscription_id: int, now: datetime, summary: str) -> bool:
    """Disable the subscription if it has failed since a day ago or longer (and say
    whether this call did it: only one job sends the email). The other messages waiting
    for it fail with it."""
    failing = db.session.execute(
        select(WebhookSubscription.failing_since).where(WebhookSubscription.id == subscription_id)
    ).scalar()
    if failing is None or now - failing < DISABLE_AFTER:
        return False
    reason = (
        f"Disabled automatically: every delivery failed from {failing:%Y-%m-%d %H:%M} UTC "
        f"to {now:%Y-%m-%d %H:%M} UTC. Last error: {summary}"
    )
    disabled = db.session.execute(
        update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription_id, WebhookSubscription.active.is_(True))
        .values(active=False, disabled_at=now, disabled_reason=reason, updated_at=now)
    )
    if disabled.rowcount != 1:
        return False
    db.session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.subscription_id == subscription_id,
            WebhookMessage.state == MessageState.PENDING.value,
        )
        .values(
            state=MessageState.FAILED.value,
            last_error="The subscription was disabled.",
            updated_at=now,
        )
    )
    return True


def _settle(message: WebhookMessage, state: MessageState, **values) -> str:
    """Record how one try of a message ended (and commit, with the attempt's log row)."""
    message.state = state.value
    for name, value in values.items():
        setattr(message, name, value)
    db.session.commit()
    return message.state


def reconcile_webhooks(now: datetime | None = None) -> dict[str, int]:
    """Put messages stuck in `sending` (a killed worker) back in line and hand due ones
    to workers; part of the hub's reconciler."""
    now = now or utcnow()
    timeout = timedelta(seconds=current_app.config["HUB_SENDING_TIMEOUT"])
    released = db.session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.state == MessageState.SENDING.value,
            WebhookMessage.updated_at < now - timeout,
        )
        .values(state=MessageState.PENDING.value, next_attempt_at=None, updated_at=now)
    )
    db.session.commit()
    due = db.session.execute(
        select(WebhookMessage.id)
        .where(
            WebhookMessage.state == MessageState.PENDING.value,
            or_(WebhookMessage.next_attempt_at.is_(None), WebhookMessage.next_attempt_at <= now),
        )
        .order_by(WebhookMessage.id)
        .limit(BATCH)
    ).scalars()
    return {
        "webhooks_released": released.rowcount,
        "webhooks": sum(enqueue_message(message_id) for message_id in due.all()),
    }
