"""Recording a customer's score and comment, with the 15-minute change window."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import utcnow

#: A second click within this time replaces the score; later clicks are refused.
CHANGE_WINDOW = timedelta(minutes=15)
#: Different scores submitted automatically this close together are a scanner, not a person.
SCANNER_BURST = timedelta(seconds=60)
MAX_COMMENT_LENGTH = 5000


class RatingLocked(Exception):
    """The score was given more than 15 minutes ago and can no longer change."""

    def __init__(self, rating: Rating) -> None:
        super().__init__(f"rating {rating.id} is final")
        self.rating = rating


def rating_for(delivery: Delivery) -> Rating | None:
    """The rating of a delivery, if the customer answered."""
    query = select(Rating).where(Rating.delivery_id == delivery.id)
    return db.session.execute(query).scalar_one_or_none()


def record_score(
    delivery: Delivery,
    value: int,
    scale: int,
    now: datetime | None = None,
    automatic: bool = False,
) -> tuple[Rating, bool]:
    """Store `value` for `delivery`; return the rating and whether it changed.

    `automatic` says the rating page submitted itself (no button press). The same score
    again changes nothing (repeated POSTs are idempotent). A different score replaces
    the first within the change window; after it `RatingLocked` is raised, except for
    ratings that look like a mail scanner's burst of clicks, which the person can still
    replace (their own answer then gets a fresh window).
    """
    now = now or utcnow()
    rating = rating_for(delivery)
    if rating is None:
        rating = Rating(
            delivery_id=delivery.id,
            survey_id=delivery.survey_id,
            agent_ref=delivery.agent_ref,
            value=value,
            scale=scale,
            created_at=now,
            updated_at=now,
        )
        db.session.add(rating)
        try:
            db.session.commit()
        except IntegrityError:
            # Two clicks raced; the other one created the row. Apply ours to it.
            db.session.rollback()
            return record_score(delivery, value, scale, now, automatic)
    elif rating.value == value and rating.scale == scale:
        if not (rating.suspected_scanner and not automatic):
            return rating, False
        # The person confirms the score a scanner happened to leave: it now counts.
        rating.suspected_scanner, rating.created_at = False, now
        db.session.commit()
    elif rating.suspected_scanner:
        rating.value, rating.scale = value, scale
        if not automatic:
            rating.suspected_scanner, rating.created_at = False, now
        db.session.commit()
    elif automatic and now - rating.created_at <= SCANNER_BURST:
        rating.value, rating.scale, rating.suspected_scanner = value, scale, True
        db.session.commit()
    elif now - rating.created_at > CHANGE_WINDOW:
        raise RatingLocked(rating)
    else:
        rating.value, rating.scale = value, scale
        db.session.commit()
    current_app.extensions["hub"].registry.rating_received(rating)
    return rating, True


def record_comment(rating: Rating, comment: str, now: datetime | None = None) -> bool:
    """Store the customer's comment; return whether it changed."""
    comment = comment.strip()[:MAX_COMMENT_LENGTH]
    if comment == rating.comment:
        return False
    rating.comment = comment
    rating.commented_at = now or utcnow()
    db.session.commit()
    current_app.extensions["hub"].registry.comment_received(rating)
    return True
