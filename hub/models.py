"""The data model: users, helpdesk connections, surveys, deliveries, ratings, write-backs."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import JSON
from sqlalchemy import Boolean
from sqlalchemy import DateTime
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import Text
from sqlalchemy import TypeDecorator
from sqlalchemy import UniqueConstraint
from sqlalchemy import text
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column
from sqlalchemy.orm import relationship
from werkzeug.security import check_password_hash
from werkzeug.security import generate_password_hash

from hub.extensions import db


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always returned timezone-aware.

    SQLite drops time zones; this keeps Python code free of naive datetimes on both
    databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use hub.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=1)
def dummy_password_hash() -> str:
    """A hash to check against when there is no account (or no password yet), so the
    answer takes as long as for a real one and tells nothing."""
    return generate_password_hash("not anyone's password")


class Role(StrEnum):
    ADMIN = "admin"
    AGENT = "agent"


class UserStatus(StrEnum):
    INVITED = "invited"
    ACTIVE = "active"
    ARCHIVED = "archived"


class ConnectionStatus(StrEnum):
    NEW = "new"
    CONNECTED = "connected"
    ERROR = "error"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SKIPPED = "skipped"
    SENDING = "sending"
    SENT = "sent"
    UNKNOWN = "unknown"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WriteBackState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    #: A newer pending write-back of the same rating carries its news.
    SUPERSEDED = "superseded"


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class User(UserMixin, TimestampMixin, db.Model):
    """A person who signs in: an admin, or an agent seeing their own ratings."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default=Role.AGENT.value)
    status: Mapped[str] = mapped_column(String(20), default=UserStatus.INVITED.value)
    password_hash: Mapped[str | None] = mapped_column(String(256))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id"))
    helpdesk_user_id: Mapped[str | None] = mapped_column(String(100))
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    invited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Part of the session cookie's user id: raising it ends every session of the user
    # (sign-out, a new password, archiving), even cookies copied elsewhere.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def get_id(self) -> str:  # Flask-Login
        return f"{self.id}:{self.session_version}"

    def end_sessions(self) -> None:
        """Make every session cookie of this user invalid (commit to apply)."""
        self.session_version = (self.session_version or 0) + 1

    @property
    def is_active(self) -> bool:  # Flask-Login: archived and invited users cannot sign in
        return self.status == UserStatus.ACTIVE

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

    def set_password(self, password: str) -> None:
        """Set a new password; any session opened with the old one ends."""
        if self.password_hash:
            self.end_sessions()
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """Whether `password` is this user's, taking as long for a user without one."""
        if not self.password_hash:
            check_password_hash(dummy_password_hash(), password)
            return False
        return check_password_hash(self.password_hash, password)


class Connection(TimestampMixin, db.Model):
    """A configured helpdesk account; secrets are kept only as ciphertext."""

    __tablename__ = "connections"

    id: Mapped[int] = mapped_column(primary_key=True)
    helpdesk: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default=ConnectionStatus.NEW.value)
    status_message: Mapped[str] = mapped_column(Text, default="")

    surveys: Mapped[list[Survey]] = relationship(back_populates="connection")

    def set_secrets(self, values: dict[str, Any]) -> None:
        """Encrypt and store the helpdesk secrets (API keys)."""
        self.secrets_encrypted = current_app.extensions["hub"].vault.encrypt(values)

    def get_secrets(self) -> dict[str, Any]:
        """Decrypt the helpdesk secrets; never render or log the result."""
        if not self.secrets_encrypted:
            return {}
        return current_app.extensions["hub"].vault.decrypt(self.secrets_encrypted)

    def __repr__(self) -> str:  # secrets stay out of logs and tracebacks
        return f"<Connection {self.id} {self.helpdesk} {self.name!r}>"


class Survey(TimestampMixin, db.Model):
    """One metric's trigger on one connection, with its settings and scan watermark."""

    __tablename__ = "surveys"

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    metric: Mapped[str] = mapped_column(String(50))
    scale: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The earliest resolution time surveyed: activation time minus the look-back.
    resolved_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Tickets resolved before this were scanned completely (never moves back).
    watermark: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_scan_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_scan_error: Mapped[str] = mapped_column(Text, default="")
    # A webhook asks for a scan at this time (resolution + delay); polling is the backstop.
    scan_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    connection: Mapped[Connection] = relationship(back_populates="surveys")

    __table_args__ = (Index("ix_surveys_active_metric", "active", "metric"),)


class Delivery(TimestampMixin, db.Model):
    """One ticket's survey email: pending, skipped with a reason, sent, failed..."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"))
    ticket_id: Mapped[str] = mapped_column(String(100))
    requester_email: Mapped[str | None] = mapped_column(String(320))
    requester_name: Mapped[str] = mapped_column(String(200), default="")
    locale: Mapped[str | None] = mapped_column(String(20))
    agent_ref: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(20), default=DeliveryState.PENDING.value)
    skip_reason: Mapped[str | None] = mapped_column(String(50))
    error: Mapped[str] = mapped_column(Text, default="")
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    message_id: Mapped[str | None] = mapped_column(String(255))
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The ticket's last activity as the scan or send-time re-check saw it (not counting
    # the hub's own writes): what another survey compares its delay with later.
    ticket_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the customer first opened the rating page (for the coverage funnel).
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The ticket's page in the helpdesk's web app, as its connector gave it at the scan.
    ticket_url: Mapped[str | None] = mapped_column(String(500))

    survey: Mapped[Survey] = relationship()
    #: The customer's answer, if any; read-only (answers are written as `Rating` rows,
    #: see hub.ratings), so the rating pages can load it with the delivery.
    rating: Mapped[Rating | None] = relationship(viewonly=True, uselist=False)

    __table_args__ = (
        UniqueConstraint("survey_id", "ticket_id"),
        Index("ix_deliveries_survey_state", "survey_id", "state"),
        Index("ix_deliveries_survey_sent_at", "survey_id", "sent_at"),
        Index("ix_deliveries_email_sent_at", "requester_email", "sent_at"),
        Index("ix_deliveries_state_updated_at", "state", "updated_at"),
        Index("ix_deliveries_survey_created_at", "survey_id", "created_at"),
        Index("ix_deliveries_agent_ref_id", "agent_ref", "id"),
        # /metrics counts skips by reason at every scrape: an index-only scan.
        Index("ix_deliveries_state_skip_reason", "state", "skip_reason"),
    )


class Rating(TimestampMixin, db.Model):
    """A customer's answer: the raw value on the scale it was given, and a comment."""

    __tablename__ = "ratings"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id"), unique=True)
    # Copied from the delivery so report queries need no join.
    survey_id: Mapped[int] = mapped_column(ForeignKey("surveys.id"))
    agent_ref: Mapped[str | None] = mapped_column(String(100))
    value: Mapped[int] = mapped_column(Integer)
    scale: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    commented_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when several different scores arrived automatically within seconds, as when a
    # mail security scanner opens every link; such a rating stays open to the person.
    suspected_scanner: Mapped[bool] = mapped_column(Boolean, default=False)

    delivery: Mapped[Delivery] = relationship()

    __table_args__ = (
        Index("ix_ratings_survey_created_at", "survey_id", "created_at"),
        Index("ix_ratings_survey_agent", "survey_id", "agent_ref"),
    )


class WriteBack(TimestampMixin, db.Model):
    """Pushing one rating (or its later comment) into the helpdesk, with retries."""

    __tablename__ = "write_backs"

    id: Mapped[int] = mapped_column(primary_key=True)
    rating_id: Mapped[int] = mapped_column(ForeignKey("ratings.id"))
    kind: Mapped[str] = mapped_column(String(20), default="score")
    state: Mapped[str] = mapped_column(String(20), default=WriteBackState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note_external_id: Mapped[str | None] = mapped_column(String(256))
    helpdesk_note_id: Mapped[str | None] = mapped_column(String(100))
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    rating: Mapped[Rating] = relationship()

    __table_args__ = (
        Index("ix_write_backs_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_write_backs_rating_id", "rating_id"),
        # At most one pending write-back per rating, whatever races: concurrent clicks
        # refresh the one that is waiting instead of adding notes.
        Index(
            "uq_write_backs_pending_rating_id",
            "rating_id",
            unique=True,
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )


class OwnWrite(db.Model):
    """The hub's own writes to one ticket, so they are not mistaken for ticket activity.

    Writing a note or an attribute bumps the ticket's update time in the helpdesk; while
    the ticket's update time is still the one our latest write left (`updated_at`), its
    real last activity is `activity_at`, as seen before our first write.
    """

    __tablename__ = "own_writes"

    id: Mapped[int] = mapped_column(primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    ticket_id: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activity_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("connection_id", "ticket_id"),)


class Milestone(db.Model):
    """A one-time step of the hub's life (the first admin), recorded once: the unique key
    lets exactly one of several concurrent requests reach it."""

    __tablename__ = "milestones"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(50), unique=True)
    reached_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(db.Model):
    """A personal API token: shown once, kept as a SHA-256 hash; its prefix identifies
    it in lists. It acts for its user, with the `read` or `write` scope."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(20), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(10), default="read")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class Suppression(db.Model):
    """An address that must never be surveyed again (unsubscribed, bounced, erased),
    kept only as a keyed hash of its normal form (`hub.suppressions`)."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(primary_key=True)
    email_hash: Mapped[str] = mapped_column(String(64), unique=True)
    reason: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class HubKey(db.Model):
    """A random key the hub made for itself (e.g. the suppression list's hash key),
    stored encrypted like helpdesk secrets, so `surveyhub rotate-secrets` carries it
    over to a new HUB_SECRET_KEY."""

    __tablename__ = "hub_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"<HubKey {self.name!r}>"


class AuditEntry(db.Model):
    """Something an admin did that must be on record (e.g. erasing a person); its
    details never hold a customer's address."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(50))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    actor: Mapped[User | None] = relationship()

    __table_args__ = (Index("ix_audit_entries_action_created_at", "action", "created_at"),)


class HelpdeskErasure(db.Model):
    """What an erasure still has to remove from one helpdesk ticket (the hub's notes and
    attribute values), retried until the helpdesk answers; deleted once done."""

    __tablename__ = "helpdesk_erasures"

    id: Mapped[int] = mapped_column(primary_key=True)
    audit_entry_id: Mapped[int] = mapped_column(ForeignKey("audit_entries.id"))
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id"))
    ticket_id: Mapped[str] = mapped_column(String(100))
    attribute_names: Mapped[list[str]] = mapped_column(JSON, default=list)
    note_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_helpdesk_erasures_audit_entry_id", "audit_entry_id"),
        Index("ix_helpdesk_erasures_next_attempt_at", "next_attempt_at"),
    )


from hub.webhooks import models as _webhook_models  # noqa: E402, F401  (registers the tables)
