"""Recording a customer's score and comment, with the 15-minute change window."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from datetime import timedelta

from flask import current_app
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from hub.extensions import db
from hub.extensions import rows_kept
from hub.models import Delivery
from hub.models import Rating
from hub.models import WriteBack
from hub.models import utcnow
from hub.pipeline.writeback import enqueue_if_due
from hub.pipeline.writeback import new_write_back
from hub.pipeline.writeback import stage_write_back
from hub.webhooks.events import comment_added
from hub.webhooks.events import rating_changed

#: A second click within this time replaces the score; later clicks are refused.
CHANGE_WINDOW = timedelta(minutes=15)
#: Different scores submitted automatically this close together are a scanner, not a person.
SCANNER_BURST = timedelta(seconds=60)
MAX_COMMENT_LENGTH = 5000
#: How often a score or comment is re-applied after losing a race to a concurrent one.
RETRIES = 5


class RatingLocked(Exception):
    """The score was given more than 15 minutes ago and can no longer change."""

    def __init__(self, rating: Rating) -> None:
        super().__init__(f"rating {rating.id} is final")
        self.rating = rating


def rating_for(delivery: Delivery) -> Rating | None:
    """The rating of a delivery, if the customer answered (the rating pages load it with
    the delivery; otherwise it is read now)."""
    return delivery.rating


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
    for _ in range(RETRIES):
        before = rating_for(delivery)
        # A scanner's clicks sent no event: the person's own click is the rating's news.
        created = before is None or before.suspected_scanner
        try:
            rating = _apply_score(before, delivery, value, scale, now, automatic)
            if rating is None:
                return before, False
            write_back = stage_write_back(rating, "score", now, new_rating=before is None)
            # Webhooks, committed with the score; a rating new in this transaction has no
            # scanner's news to cancel.
            rating_changed(rating, created, now, scanner_news=before is not None)
            # The rows this transaction wrote stay loaded for the enqueue and the
            # plugins: no SELECTs to read back what was just written.
            with rows_kept():
                db.session.commit()
                enqueue_if_due(write_back.id, write_back.next_attempt_at, now)
                current_app.extensions["hub"].registry.rating_received(rating)
        except IntegrityError:
            # A concurrent click created the rating or its write-back first: apply ours
            # to what it committed.
            db.session.rollback()
            continue
        return rating, True
    raise RuntimeError(f"The score for delivery {delivery.id} kept conflicting; try again.")


def _apply_score(
    rating: Rating | None,
    delivery: Delivery,
    value: int,
    scale: int,
    now: datetime,
    automatic: bool,
) -> Rating | None:
    """Change (or create) the rating in the session; None when nothing changes."""
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
        db.session.flush()  # a concurrent first click makes this fail: unique delivery
        set_committed_value(delivery, "rating", rating)  # a rollback expires it again
    elif unchanged(rating.value, rating.scale, rating.suspected_scanner, value, scale, automatic):
        return None
    elif rating.value == value and rating.scale == scale:
        # The person confirms the score a scanner happened to leave: it now counts.
        rating.suspected_scanner, rating.created_at = False, now
    elif rating.suspected_scanner:
        rating.value, rating.scale = value, scale
        if not automatic:
            rating.suspected_scanner, rating.created_at = False, now
    elif automatic and now - rating.created_at <= SCANNER_BURST:
        rating.value, rating.scale, rating.suspected_scanner = value, scale, True
    elif now - rating.created_at > CHANGE_WINDOW:
        raise RatingLocked(rating)
    else:
        rating.value, rating.scale = value, scale
    return rating


def unchanged(
    value: int, scale: int, suspected_scanner: bool, new_value: int, new_scale: int, automatic: bool
) -> bool:
    """Whether a score submitted again leaves a rating as it is (the same score, unless
    the person confirms one a mail scanner left)."""
    return (value, scale) == (new_value, new_scale) and not (suspected_scanner and not automatic)


#: Built once: the statement cache then knows them (`.values()` would build new ones).
_NEW_RATING = insert(Rating)
_NEW_WRITE_BACK = insert(WriteBack)


def record_first_score(
    delivery_id: int,
    survey_id: int,
    agent_ref: str | None,
    value: int,
    scale: int,
    now: datetime | None = None,
) -> Rating | None:
    """Store the first score of a delivery that has none, and its write-back, in the
    session's transaction (with anything the caller added to it); None when a
    concurrent click stored one first (then nothing is kept: apply the score with
    `record_score`, which changes the rating that click made).

    What `record_score` does for a first score, as two Core INSERTs instead of unit of
    work flushes: a customer's answer is the hub's busiest write (docs/performance.md).
    The rating is the person's own (a first score is never a scanner's burst) and the
    webhooks, write-back and plugins see it as they do from `record_score`.
    """
    now = now or utcnow()
    connection = db.session.connection()
    columns = {
        "delivery_id": delivery_id,
        "survey_id": survey_id,
        "agent_ref": agent_ref,
        "value": value,
        "scale": scale,
        "comment": "",
        "commented_at": None,
        "suspected_scanner": False,
        "created_at": now,
        "updated_at": now,
    }
    try:
        (rating_id,) = connection.execute(_NEW_RATING, columns).inserted_primary_key
        staged = new_write_back(rating_id, "score", now)
        (write_back_id,) = connection.execute(_NEW_WRITE_BACK, staged).inserted_primary_key
        # The row as the session's own, without reading it back: webhooks and plugins
        # take a Rating.
        rating = Rating(id=rating_id, **columns)
        make_transient_to_detached(rating)
        db.session.add(rating)
        rating_changed(rating, True, now, scanner_news=False)
        with rows_kept():
            db.session.commit()
    except IntegrityError:
        db.session.rollback()  # a concurrent first click: its rating stands
        return None
    enqueue_if_due(write_back_id, staged["next_attempt_at"], now)
    current_app.extensions["hub"].registry.rating_received(rating)
    return rating


def record_comment(rating: Rating, comment: str, now: datetime | None = None) -> bool:
    """Store the customer's comment (and its write-back); return whether it changed."""
    now = now or utcnow()
    comment = clean_comment(comment)
    rating_id = rating.id
    for _ in range(RETRIES):
        rating = db.session.get(Rating, rating_id)
        if comment == rating.comment:
            return False
        rating.comment = comment
        rating.commented_at = now
        try:
            write_back = stage_write_back(rating, "comment", now) if comment else None
            comment_added(rating, now)  # webhooks, committed with the comment
            with rows_kept():  # as for a score: no SELECTs to read back what was written
                db.session.commit()
                if write_back is not None:
                    enqueue_if_due(write_back.id, write_back.next_attempt_at, now)
                current_app.extensions["hub"].registry.comment_received(rating)
        except IntegrityError:
            db.session.rollback()
            continue
        return True
    raise RuntimeError(f"The comment for rating {rating_id} kept conflicting; try again.")


def clean_comment(comment: str) -> str:
    """The comment as stored: control characters (NUL included) removed, except line
    breaks and tabs, trimmed and capped."""
    kept = "".join(
        ch for ch in comment if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cs")
    )
    return kept.replace("\r\n", "\n").strip()[:MAX_COMMENT_LENGTH]
