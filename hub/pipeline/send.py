"""Sending: re-check the ticket, then send its survey email at most once."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import update

from hub.connections import open_helpdesk
from hub.emails import Suppressed
from hub.emails import build_email
from hub.emails import recipient_of
from hub.extensions import db
from hub.helpdesk import HelpdeskError
from hub.helpdesk import NotFound
from hub.helpdesk import RateLimited
from hub.jobs import enqueue_once
from hub.jobs import forget_enqueued
from hub.mail import Mailer
from hub.mail import PermanentMailError
from hub.mail import TemporaryMailError
from hub.mail import UncertainMailError
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import utcnow
from hub.pipeline.decide import TICKET_GONE
from hub.pipeline.decide import UNSUBSCRIBED
from hub.pipeline.decide import skip_reason
from hub.surveys import settings_of

log = logging.getLogger(__name__)

#: Give up on a mail server that keeps refusing after this many tries (about a day:
#: 1, 2, 4 … 32 minutes, then hourly).
MAX_ATTEMPTS = 30


def enqueue_send(delivery_id: int) -> bool:
    """Hand one pending delivery to a worker (once, until that job starts)."""
    return enqueue_once(send_delivery, f"send:{delivery_id}", delivery_id, job_timeout=600)


def retry_delay(attempts: int) -> timedelta:
    """Backoff between tries: 1, 2, 4 … minutes, at most an hour."""
    return timedelta(minutes=min(60, 2 ** max(0, attempts - 1)))


def send_delivery(delivery_id: int) -> str:
    """Re-check one pending delivery's ticket and send its email; return the new state."""
    forget_enqueued(f"send:{delivery_id}")
    delivery = db.session.get(Delivery, delivery_id)
    now = utcnow()
    if delivery is None or delivery.state != DeliveryState.PENDING:
        return delivery.state if delivery else "missing"
    if delivery.next_attempt_at and delivery.next_attempt_at > now:
        return delivery.state
    survey = delivery.survey
    if not survey.active:
        # A scan that was running while the survey was deactivated may still have
        # recorded it: cancel it like the deactivation did the others.
        return _set(delivery, DeliveryState.CANCELLED, error="The survey was deactivated.")
    try:
        return _check_and_send(delivery, survey, now)
    except Exception as exc:  # a bug or a missing plugin: show it, retry later
        db.session.rollback()
        log.exception("Delivery %s could not be processed", delivery_id)
        return _later(
            db.session.get(Delivery, delivery_id),
            f"Unexpected error: {exc}",
            now + timedelta(minutes=15),
        )


def _check_and_send(delivery: Delivery, survey, now) -> str:
    settings = settings_of(survey)
    try:
        ticket = open_helpdesk(survey.connection).fetch_ticket(delivery.ticket_id)
    except NotFound:
        return _skip(delivery, TICKET_GONE)
    except HelpdeskError as exc:
        # Retryable or not (a revoked key, a missing role), the admin or time can fix
        # it; the delivery waits instead of being lost.
        when = (
            exc.resume_at(now)
            if isinstance(exc, RateLimited)
            else now + timedelta(minutes=1 if exc.retryable else 15)
        )
        return _later(delivery, f"Re-checking the ticket failed: {exc}", when)

    reason = skip_reason(ticket, survey.id, settings, now, delivery_id=delivery.id)
    if reason:
        return _skip(delivery, reason)

    try:
        message = build_email(survey, recipient_of(delivery))
    except Suppressed:
        return _skip(delivery, UNSUBSCRIBED)
    if not _claim(delivery.id, now):
        return "taken"  # another worker got there first
    try:
        with Mailer(current_app.config) as mailer:
            mailer.send(message)
    except UncertainMailError as exc:
        return _finish(delivery, DeliveryState.UNKNOWN, error=str(exc))
    except TemporaryMailError as exc:
        db.session.refresh(delivery)
        if delivery.attempts >= MAX_ATTEMPTS:
            error = f"Gave up after {delivery.attempts} tries: {exc}"
            return _finish(delivery, DeliveryState.FAILED, error=error)
        # Nothing was sent: back in line.
        when = now + retry_delay(delivery.attempts)
        return _finish(delivery, DeliveryState.PENDING, error=str(exc), next_attempt_at=when)
    except PermanentMailError as exc:
        return _finish(delivery, DeliveryState.FAILED, error=str(exc))
    state = _finish(
        delivery,
        DeliveryState.SENT,
        sent_at=utcnow(),
        message_id=message["Message-ID"],
        error="",
    )
    log.info("Sent survey for ticket %s to %s", delivery.ticket_id, delivery.requester_email)
    return state


def _claim(delivery_id: int, now) -> bool:
    """Move the row from pending to sending; only one worker can succeed.

    From here on a crash leaves the row in `sending`, which the reconciler turns into
    `unknown`: the email may have gone out, so it is never sent again by itself.
    """
    result = db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.PENDING.value)
        .values(state=DeliveryState.SENDING.value, attempts=Delivery.attempts + 1, updated_at=now)
    )
    db.session.commit()
    return result.rowcount == 1


def _set(
    delivery: Delivery,
    state: DeliveryState | None = None,
    expected: DeliveryState = DeliveryState.PENDING,
    **values,
) -> str:
    """Update the row only while it is still in `expected`; return its state after.

    Another job may have moved it on meanwhile (a duplicate job, the reconciler), so
    every change is conditional on the state this job saw.
    """
    if state is not None:
        values["state"] = state.value
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.state == expected.value)
        .values(updated_at=utcnow(), **values)
    )
    db.session.commit()
    db.session.refresh(delivery)
    return delivery.state


def _skip(delivery: Delivery, reason: str) -> str:
    return _set(delivery, DeliveryState.SKIPPED, skip_reason=reason)


def _later(delivery: Delivery, error: str, when) -> str:
    log.info("Delivery %s: %s; next try at %s", delivery.id, error, when.isoformat())
    return _set(delivery, error=error, next_attempt_at=when)


def _finish(delivery: Delivery, state: DeliveryState, **values) -> str:
    """Record how a claimed (`sending`) delivery ended."""
    if state is not DeliveryState.SENT:
        log.warning("Delivery %s is %s: %s", delivery.id, state.value, values.get("error"))
    return _set(delivery, state, expected=DeliveryState.SENDING, **values)
