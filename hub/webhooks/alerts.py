"""Telling the admins by email that a webhook subscription was disabled."""

from __future__ import annotations

import logging
from email.message import EmailMessage
from urllib.parse import urlsplit

from flask import current_app
from flask import render_template
from sqlalchemy import select

from hub.extensions import db
from hub.mail import Mailer
from hub.mail import MailError
from hub.mail import staff_email
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from hub.webhooks.models import WebhookSubscription

log = logging.getLogger(__name__)


def disabled_email(subscription: WebhookSubscription, admin: User) -> EmailMessage:
    """The email to one admin saying which subscription stopped and why."""
    base = current_app.config["HUB_BASE_URL"].rstrip("/")
    text = render_template(
        "email/webhook_disabled.txt",
        subscription=subscription,
        # The host only: a subscriber's full URL may be a credential (Slack's is).
        host=urlsplit(subscription.url).hostname or "?",
        link=f"{base}/webhooks/{subscription.id}",
    )
    return staff_email(
        current_app.config["MAIL_FROM"],
        admin.name,
        admin.email,
        "A SurveyHub webhook was disabled",
        text,
        "webhook",
    )


def tell_admins_disabled(subscription: WebhookSubscription) -> int:
    """Email every active admin; return how many were told. Mail trouble is logged, not
    raised: the subscription is disabled either way and its page says why."""
    admins = (
        db.session.execute(
            select(User).where(
                User.role == Role.ADMIN.value, User.status == UserStatus.ACTIVE.value
            )
        )
        .scalars()
        .all()
    )
    told = 0
    if not admins:
        return told
    try:
        with Mailer(current_app.config) as mailer:
            for admin in admins:
                try:
                    mailer.send(disabled_email(subscription, admin))
                    told += 1
                except MailError as exc:
                    log.warning("Could not tell admin %s: %s", admin.id, exc)
    except MailError as exc:
        log.warning("Could not tell the admins about webhook %s: %s", subscription.id, exc)
    return told
