"""The suppression list: addresses that must never be surveyed again."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.extensions import db
from hub.models import Suppression


def normalise_email(email: str) -> str:
    """Lower-cased and trimmed, so one person is one entry."""
    return email.strip().lower()


def is_suppressed(email: str) -> bool:
    """Whether `email` is on the suppression list."""
    query = select(Suppression.id).where(Suppression.email == normalise_email(email))
    return db.session.execute(query).first() is not None


def suppress(email: str, reason: str) -> None:
    """Put `email` on the suppression list (idempotent) and commit."""
    if is_suppressed(email):
        return
    db.session.add(Suppression(email=normalise_email(email), reason=reason))
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent request added it first: same outcome
        db.session.rollback()
