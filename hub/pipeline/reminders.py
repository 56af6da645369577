"""Reminders: one more email to requesters who have not answered after N days (optional)."""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from hub.emails import build_email
from hub.emails import recipient_of
from hub.extensions import db
from hub.mail import Mailer
from hub.mail import MailError
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Rating
from hub.models import Survey
from hub.models import utcnow
from hub.suppressions import is_suppressed
from hub.surveys import settings_of

log = logging.getLogger(__name__)

BATCH = 200


def send_reminders() -> int:
    """Send the single reminder where a survey asks for one; return how many were sent."""
    now = utcnow()
    sent = 0
    for survey in db.session.execute(select(Survey).where(Survey.active.is_(True))).scalars():
        days = settings_of(survey)["reminder_days"]
        if not days:
            continue
        due = (
            db.session.execute(
                select(Delivery)
                .outerjoin(Rating, Rating.delivery_id == Delivery.id)
                .where(
                    Delivery.survey_id == survey.id,
                    Delivery.state == DeliveryState.SENT.value,
                    Delivery.reminded_at.is_(None),
                    Delivery.sent_at <= now - timedelta(days=days),
                    Rating.id.is_(None),
                )
                .limit(BATCH)
            )
            .scalars()
            .all()
        )
        if not due:
            continue
        with Mailer(current_app.config) as mailer:
            for delivery in due:
                # Marked before sending: a reminder is sent at most once, even if the
                # worker dies right after the SMTP server took it.
                delivery.reminded_at = now
                db.session.commit()
                if is_suppressed(delivery.requester_email or ""):
                    continue
                try:
                    mailer.send(build_email(survey, recipient_of(delivery), reminder=True))
                    sent += 1
                except MailError as exc:
                    log.warning("Reminder for delivery %s not sent: %s", delivery.id, exc)
    return sent
