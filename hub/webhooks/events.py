"""Recording webhook events in the same transaction as the change they report (an outbox).

Each function adds an event and one message per matching active subscription to the
current session; the caller's commit stores them with the rating, delivery or
write-back they describe, so an event is never lost nor sent for a change that was
rolled back. After that commit the due messages are handed to workers; the reconciler
(`sender.reconcile_webhooks`) picks up any left behind (Redis away, a worker killed).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Row
from sqlalchemy import Select
from sqlalchemy import delete
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import Session

from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from hub.models import WriteBack
from hub.models import utcnow
from hub.webhooks.models import MessageState
from hub.webhooks.models import WebhookAttempt
from hub.webhooks.models import WebhookEvent
from hub.webhooks.models import WebhookMessage
from hub.webhooks.models import WebhookSubscription

log = logging.getLogger(__name__)

RATING_CREATED = "rating.created"
RATING_UPDATED = "rating.updated"
COMMENT_CREATED = "comment.created"
DELIVERY_SENT = "delivery.sent"
WRITEBACK_FAILED = "writeback.failed"
#: The events a subscription can choose, in the order the pages list them.
EVENT_TYPES = (RATING_CREATED, RATING_UPDATED, COMMENT_CREATED, DELIVERY_SENT, WRITEBACK_FAILED)
#: Sent by "Send test event" to one subscription only.
TEST_EVENT = "webhook.test"

#: Where a session keeps the messages to enqueue once it commits.
_TO_ENQUEUE = "hub.webhooks.to_enqueue"


def group_of(survey: Survey, value: int, scale: int) -> str | None:
    """The score group (e.g. detractor) of a value, or None when the metric is missing."""
    metric = current_app.extensions["hub"].registry.metrics.get(survey.metric)
    if metric is None:
        return None
    try:
        return metric.group(value, scale)
    except Exception:  # a plugin's bug must not stop the rating from being recorded
        log.exception("The %s metric could not group %s/%s", survey.metric, value, scale)
        return None


def _matches(sub: WebhookSubscription | Row, event_type: str, survey: Survey | None, group) -> bool:
    if event_type not in (sub.events or []):
        return False
    if sub.survey_id is not None and (survey is None or survey.id != sub.survey_id):
        return False
    if sub.metric and (survey is None or survey.metric != sub.metric):
        return False
    # A group filter lets through only events about a rating in that group.
    return not sub.score_group or group == sub.score_group


def record_event(
    event_type: str,
    data: dict[str, Any],
    *,
    survey: Survey | None = None,
    group: str | None = None,
    now: datetime | None = None,
    delay: timedelta | None = None,
    only: WebhookSubscription | None = None,
    active: list[Row] | None = None,
) -> WebhookEvent | None:
    """Add the event and its messages to the session (the caller commits); None when no
    active subscription wants it. `delay` holds the messages back that long; `only`
    sends to that one subscription whatever its filters (the test event); `active` is
    what `active_subscriptions` gave a job that records many events (else read now)."""
    now = now or utcnow()
    if only is not None:
        subscriptions = [only]
    else:
        if active is None:
            active = active_subscriptions()
        subscriptions = [sub for sub in active if _matches(sub, event_type, survey, group)]
    if not subscriptions:
        return None
    event = WebhookEvent(
        uid=f"msg_{secrets.token_urlsafe(18)}", type=event_type, data=data, created_at=now
    )
    db.session.add(event)
    db.session.flush()
    due = now + delay if delay else None
    messages = [
        WebhookMessage(
            event_id=event.id,
            subscription_id=sub.id,
            next_attempt_at=due,
            created_at=now,
            updated_at=now,
        )
        for sub in subscriptions
    ]
    db.session.add_all(messages)
    db.session.flush()
    if due is None:  # the reconciler hands over delayed ones when they are due
        db.session.info.setdefault(_TO_ENQUEUE, []).extend(m.id for m in messages)
    return event


@sa_event.listens_for(Session, "after_commit")
def _enqueue_after_commit(session: Session) -> None:
    ids = session.info.pop(_TO_ENQUEUE, None)
    if ids:
        from hub.webhooks.sender import enqueue_message

        for message_id in ids:
            enqueue_message(message_id)


@sa_event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_TO_ENQUEUE, None)


def _rating_facts(rating: Rating, survey: Survey) -> tuple[dict[str, Any], str | None]:
    group = group_of(survey, rating.value, rating.scale)
    facts = {
        "rating_id": rating.id,
        "delivery_id": rating.delivery_id,
        "survey_id": survey.id,
        "value": rating.value,
        "scale": rating.scale,
        "group": group,
    }
    return facts, group


def rating_changed(rating: Rating, created: bool, now: datetime, scanner_news: bool = True) -> None:
    """`rating.created` or `rating.updated`, in the transaction storing the score.

    Held back for the write-back grace time (`HUB_WRITEBACK_GRACE`): a comment typed
    right after the click is then part of it, and a mail scanner's burst of clicks is
    recognised before anything is sent (such ratings send nothing until the person's
    own click). `scanner_news=False` says the rating row is new in this transaction, so
    no scanner's news of it can be waiting to be cancelled.
    """
    if rating.suspected_scanner:
        return
    if created and scanner_news and rating.id is not None:
        _cancel_scanner_news(rating.id, now)
    active = active_subscriptions()
    if not active:  # the usual case: nothing to word, no survey to read
        return
    survey = db.session.get(Survey, rating.survey_id)
    facts, group = _rating_facts(rating, survey)
    grace = timedelta(seconds=current_app.config.get("HUB_WRITEBACK_GRACE") or 0)
    kind = RATING_CREATED if created else RATING_UPDATED
    record_event(
        kind, facts, survey=survey, group=group, now=now, delay=grace or None, active=active
    )


def _cancel_scanner_news(rating_id: int, now: datetime) -> None:
    # The person's own click on a rating a mail scanner clicked first: the scanner's
    # score, still waiting to go out, is not the rating's news.
    events = select(WebhookEvent.id).where(
        WebhookEvent.type.in_((RATING_CREATED, RATING_UPDATED)),
        WebhookEvent.data["rating_id"].as_integer() == rating_id,
    )
    db.session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.event_id.in_(events),
            WebhookMessage.state == MessageState.PENDING.value,
        )
        .values(
            state=MessageState.CANCELLED.value,
            last_error="Not sent: a mail scanner's click; the person's own click was sent.",
            updated_at=now,
        ),
        execution_options={"synchronize_session": False},
    )


def comment_added(rating: Rating, now: datetime) -> None:
    """`comment.created`, in the transaction storing a new, non-empty comment."""
    if not rating.comment or rating.suspected_scanner:
        return
    active = active_subscriptions()
    if not active:
        return
    survey = db.session.get(Survey, rating.survey_id)
    facts, group = _rating_facts(rating, survey)
    record_event(COMMENT_CREATED, facts, survey=survey, group=group, now=now, active=active)


#: What deciding who wants an event needs of each active subscription.
_ACTIVE = select(
    WebhookSubscription.id,
    WebhookSubscription.events,
    WebhookSubscription.survey_id,
    WebhookSubscription.metric,
    WebhookSubscription.score_group,
).where(WebhookSubscription.active.is_(True))


def active_subscriptions() -> list[Row]:
    """The active subscriptions (id, events and filters): read once by a job that
    records an event per email (a subscription saved meanwhile gets the events of the
    jobs that start after), and by every answer. Plain rows on the session's
    connection, not ORM objects: most hubs have none, and an answer's unit of work
    has nothing to flush first."""
    return list(db.session.connection().execute(_ACTIVE))


def delivery_sent(delivery: Delivery, now: datetime, active: list[Row] | None = None) -> None:
    """`delivery.sent`, in the transaction marking the survey email sent."""
    survey = delivery.survey
    facts = {"delivery_id": delivery.id, "survey_id": survey.id, "ticket_id": delivery.ticket_id}
    record_event(DELIVERY_SENT, facts, survey=survey, now=now, active=active)


def write_back_failed(write_back: WriteBack, error: str, now: datetime) -> None:
    """`writeback.failed`, in the transaction that gives a write-back up for good."""
    rating = write_back.rating
    survey = db.session.get(Survey, rating.survey_id)
    facts, group = _rating_facts(rating, survey)
    facts.update(write_back_id=write_back.id, kind=write_back.kind, error=error[:1000])
    record_event(WRITEBACK_FAILED, facts, survey=survey, group=group, now=now)


def forget_events(delivery_ids: Select) -> int:
    """Delete the events about these deliveries (and their ratings), with their messages
    and attempts, in the caller's transaction (erasing a person): a write-back's error
    in an event could quote the address. Returns the events removed."""
    events = select(WebhookEvent.id).where(
        WebhookEvent.data["delivery_id"].as_integer().in_(delivery_ids)
    )
    messages = select(WebhookMessage.id).where(WebhookMessage.event_id.in_(events))
    options = {"synchronize_session": False}
    db.session.execute(
        delete(WebhookAttempt).where(WebhookAttempt.message_id.in_(messages)),
        execution_options=options,
    )
    db.session.execute(
        delete(WebhookMessage).where(WebhookMessage.event_id.in_(events)),
        execution_options=options,
    )
    return db.session.execute(
        delete(WebhookEvent).where(WebhookEvent.id.in_(events)), execution_options=options
    ).rowcount
