"""The webhook tables: subscriptions, the event outbox, one message per event and
subscriber, and the log of every attempt to deliver one."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from flask import current_app
from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import UniqueConstraint
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship

from hub.extensions import db
from hub.models import Survey
from hub.models import TimestampMixin
from hub.models import UTCDateTime
from hub.models import utcnow


class MessageState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"
    #: Given up: the subscriber kept failing, or the subscription was disabled.
    FAILED = "failed"
    #: Not sent on purpose (the rating was erased, or looked like a mail scanner's).
    CANCELLED = "cancelled"


class WebhookSubscription(TimestampMixin, db.Model):
    """Where to send which events, signed with a secret only the subscriber knows."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str] = mapped_column(String(200), default="")
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Filters; None lets everything through.
    survey_id: Mapped[int | None] = mapped_column(ForeignKey("surveys.id"))
    metric: Mapped[str | None] = mapped_column(String(50))
    score_group: Mapped[str | None] = mapped_column(String(20))
    #: "standard" (the event's JSON) or "slack" (an incoming-webhook message).
    format: Mapped[str] = mapped_column(String(20), default="standard")
    secret_encrypted: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    disabled_reason: Mapped[str] = mapped_column(Text, default="")
    # Set by the first failure after a success; a day of failures disables it.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str] = mapped_column(String(300), default="")

    survey: Mapped[Survey | None] = relationship()

    def set_secret(self, secret: str) -> None:
        """Encrypt and store the signing secret (`whsec_…`)."""
        self.secret_encrypted = current_app.extensions["hub"].vault.encrypt({"secret": secret})

    def get_secret(self) -> str:
        """The signing secret; never render or log it."""
        return current_app.extensions["hub"].vault.decrypt(self.secret_encrypted)["secret"]

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"<WebhookSubscription {self.id} {self.format}>"


class WebhookEvent(db.Model):
    """Something that happened, recorded in the transaction that made it happen.

    `data` holds only facts without personal data (ids, the score); the body sent is
    built from the current rows when it is sent, so an erased rating is never sent.
    """

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The `webhook-id` header: receivers use it to ignore a message they already have.
    uid: Mapped[str] = mapped_column(String(40), unique=True)
    type: Mapped[str] = mapped_column(String(50))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookMessage(TimestampMixin, db.Model):
    """One event on its way to one subscription: sent once, retried until it is done."""

    __tablename__ = "webhook_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("webhook_events.id"))
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    state: Mapped[str] = mapped_column(String(20), default=MessageState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str] = mapped_column(Text, default="")
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    event: Mapped[WebhookEvent] = relationship()
    subscription: Mapped[WebhookSubscription] = relationship()

    __table_args__ = (
        # Idempotent per event and subscriber, whatever records or retries it.
        UniqueConstraint("event_id", "subscription_id"),
        Index("ix_webhook_messages_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_webhook_messages_subscription_state", "subscription_id", "state"),
    )


class WebhookAttempt(db.Model):
    """One try at delivering a message: the delivery log the pages show."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    message_id: Mapped[int] = mapped_column(ForeignKey("webhook_messages.id"))
    event_type: Mapped[str] = mapped_column(String(50))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text, default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    succeeded: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (Index("ix_webhook_attempts_subscription_id_id", "subscription_id", "id"),)
