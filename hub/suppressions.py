"""The suppression list: addresses that must never be surveyed again."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.addresses import email_key
from hub.extensions import db
from hub.models import Suppression


def is_suppressed(email: str) -> bool:
    """Whether `email` (in any spelling of its normal form) is on the suppression list."""
    query = select(Suppression.id).where(Suppression.email == email_key(email))
    return db.session.execute(query).first() is not None


def suppress(email: str, reason: str) -> None:
    """Put `email` on the suppression list (idempotent) and commit."""
    if is_suppressed(email):
        return
    db.session.add(Suppression(email=email_key(email), reason=reason))
    try:
        db.session.commit()
    except IntegrityError:  # a concurrent request added it first: same outcome
        db.session.rollback()
