"""Write-back: every rating (and later comment) lands in the helpdesk, at least once."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from datetime import timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from hub.connections import open_helpdesk
from hub.extensions import db
from hub.helpdesk import BadRequest
from hub.helpdesk import HelpdeskError
from hub.helpdesk import NotFound
from hub.helpdesk import RateLimited
from hub.jobs import WRITE_BACKS
from hub.jobs import enqueue_once
from hub.jobs import forget_enqueued
from hub.logs import bind as bind_log
from hub.models import Rating
from hub.models import WriteBack
from hub.models import WriteBackState
from hub.models import utcnow
from hub.pipeline.own_writes import record_own_write
from hub.surveys import metric_of
from hub.surveys import settings_of
from hub.webhooks.events import write_back_failed

log = logging.getLogger(__name__)


def stage_write_back(
    rating: Rating, kind: str, now: datetime, new_rating: bool = False
) -> WriteBack:
    """Add (or refresh) `rating`'s pending write-back to the current transaction.

    Called in the same transaction as the score or comment it carries, so an answer is
    never committed without its write-back. The database allows one pending write-back
    per rating (a partial unique index): a concurrent click that inserts one first makes
    this transaction's flush or commit fail with `IntegrityError`, and the caller retries.
    A score waits a short grace time (`HUB_WRITEBACK_GRACE`), so a comment typed right
    after the click lands in the same note; the note is worded from the rating when it
    is sent, so a changed score or a quick comment never makes a second note.
    `new_rating=True` says the rating was inserted in this transaction, so it has no
    pending write-back to look for (one statement less per first answer).
    """
    grace = timedelta(seconds=current_app.config["HUB_WRITEBACK_GRACE"])
    waiting = None
    if not new_rating:
        waiting = db.session.execute(
            select(WriteBack).where(
                WriteBack.rating_id == rating.id, WriteBack.state == WriteBackState.PENDING.value
            )
        ).scalar_one_or_none()
    if waiting is not None:
        # Touch the row only while it is still pending, in this transaction: the update
        # locks it, so a worker's claim waits for this commit and then reads the new
        # score or comment. If a worker claimed it already, it may write the old answer;
        # this one then needs a write-back of its own.
        # A new score restarts the grace time of a write-back not tried yet (which also
        # wakes one parked for a scanner); one backing off keeps the helpdesk's pace.
        restart = kind == "score" and waiting.attempts == 0
        values = {"updated_at": now}
        if restart:
            values["next_attempt_at"] = now + grace
        touched = db.session.execute(
            update(WriteBack)
            .where(WriteBack.id == waiting.id, WriteBack.state == WriteBackState.PENDING.value)
            .values(**values)
        )
        if touched.rowcount == 1:  # the session's copy was updated alongside
            return waiting
    write_back = WriteBack(**new_write_back(rating.id, kind, now))
    db.session.add(write_back)  # inserted by the caller's commit
    return write_back


def new_write_back(rating_id: int, kind: str, now: datetime) -> dict:
    """The columns of a new pending write-back (for the ORM and for Core inserts).

    A score waits the grace time (`HUB_WRITEBACK_GRACE`), a comment goes at once. The
    note's externalId is one per write-back, so a retry finds the note an earlier try
    posted; it is made before the row is inserted (a random part, not the row's id), so
    a new write-back is one INSERT, not an INSERT and an UPDATE.
    """
    grace = timedelta(seconds=current_app.config["HUB_WRITEBACK_GRACE"])
    return {
        "rating_id": rating_id,
        "kind": kind,
        "next_attempt_at": now + grace if kind == "score" and grace else None,
        "note_external_id": f"surveyhub:{rating_id}:{secrets.token_hex(6)}",
        "created_at": now,
        "updated_at": now,
    }


def enqueue_if_due(write_back_id: int, next_attempt_at: datetime | None, now: datetime) -> None:
    """After the commit: hand a write-back that is due now to a worker (the reconciler
    picks up the others when their grace time is over)."""
    if next_attempt_at is None or next_attempt_at <= now:
        enqueue_write_back(write_back_id)


def enqueue_write_back(write_back_id: int) -> bool:
    """Hand one due write-back to a worker (once, until that job starts)."""
    return enqueue_once(
        run_write_back,
        f"write-back:{write_back_id}",
        write_back_id,
        queue=WRITE_BACKS,
        job_timeout=600,
    )


def retry_delay(attempts: int) -> timedelta:
    """Backoff between tries: 30 s, 1, 2, 4 … minutes, at most an hour."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


def run_write_back(write_back_id: int) -> str:
    """Post the note and set the custom attribute for one write-back; return its state."""
    forget_enqueued(f"write-back:{write_back_id}")
    now = utcnow()
    waiting = db.session.get(WriteBack, write_back_id)
    if waiting is not None and waiting.rating.suspected_scanner:
        # Clicks that look like a mail scanner's: wait for the person to confirm (their
        # click wakes this write-back up), rather than write a machine's score.
        db.session.execute(
            update(WriteBack)
            .where(WriteBack.id == write_back_id, WriteBack.state == WriteBackState.PENDING.value)
            .values(
                next_attempt_at=now + timedelta(days=1),
                last_error="Waiting: the score looks like a mail scanner's clicks.",
            )
        )
        db.session.commit()
        return WriteBackState.PENDING.value
    claimed = db.session.execute(
        update(WriteBack)
        .where(
            WriteBack.id == write_back_id,
            WriteBack.state == WriteBackState.PENDING.value,
            (WriteBack.next_attempt_at.is_(None)) | (WriteBack.next_attempt_at <= now),
        )
        .values(state=WriteBackState.RUNNING.value, attempts=WriteBack.attempts + 1, updated_at=now)
    )
    db.session.commit()
    write_back = db.session.get(WriteBack, write_back_id)
    if claimed.rowcount != 1:
        return write_back.state if write_back else "missing"
    bind_log(survey_id=write_back.rating.survey_id)
    try:
        return _write(write_back, now)
    except Exception as exc:  # a bug or a missing plugin: show it, retry later
        db.session.rollback()
        log.exception("Write-back %s failed unexpectedly", write_back_id)
        write_back = db.session.get(WriteBack, write_back_id)
        return _settle(
            write_back,
            WriteBackState.PENDING,
            last_error=f"Unexpected error: {exc}",
            next_attempt_at=now + retry_delay(write_back.attempts),
        )


def _write(write_back: WriteBack, now) -> str:
    rating = write_back.rating
    delivery = rating.delivery
    survey = delivery.survey
    metric = metric_of(survey)
    settings = settings_of(survey)
    comment = rating.comment
    note = (
        metric.note(rating.value, rating.scale, delivery.requester_email or "", comment)
        if settings["add_note"]
        else None
    )
    try:
        result = open_helpdesk(survey.connection).write_back(
            delivery.ticket_id,
            settings["attribute_name"],
            rating.value,
            note,
            write_back.note_external_id,
            # An earlier try may have posted the note before failing: look first.
            retry=write_back.attempts > 1,
        )
    except (NotFound, BadRequest) as exc:
        log.warning("Write-back %s failed: %s", write_back.id, exc)
        write_back_failed(write_back, str(exc), now)  # webhooks: committed with the state
        return _settle(write_back, WriteBackState.FAILED, last_error=str(exc))
    except HelpdeskError as exc:
        if isinstance(exc, RateLimited):
            when = exc.resume_at(now)
        else:
            when = now + retry_delay(write_back.attempts)
        log.info("Write-back %s: %s; next try at %s", write_back.id, exc, when.isoformat())
        return _settle(
            write_back, WriteBackState.PENDING, last_error=str(exc), next_attempt_at=when
        )
    # Our note and attribute bumped the ticket's update time: not ticket activity.
    record_own_write(
        survey.connection_id, delivery.ticket_id, result.updated_at, delivery.ticket_updated_at
    )
    return _settle(
        write_back,
        WriteBackState.DONE,
        helpdesk_note_id=result.note_id,
        last_error="",
        done_at=utcnow(),
    )


def _settle(write_back: WriteBack, state: WriteBackState, **values) -> str:
    """Record how one try of a write-back ended."""
    write_back.state = state.value
    for name, value in values.items():
        setattr(write_back, name, value)
    try:
        db.session.commit()
    except IntegrityError:
        # Back to pending, but the rating has a newer pending write-back (a comment or a
        # new score arrived while this one ran). Its note is worded from the rating
        # when it is sent, so it carries this one's news too.
        db.session.rollback()
        return supersede(write_back.id)
    return write_back.state


def supersede(write_back_id: int) -> str:
    """Retire a write-back whose rating has a newer pending one (and commit)."""
    write_back = db.session.get(WriteBack, write_back_id)
    newer = db.session.execute(
        select(WriteBack.id).where(
            WriteBack.rating_id == write_back.rating_id,
            WriteBack.state == WriteBackState.PENDING.value,
        )
    ).scalar_one_or_none()
    write_back.state = WriteBackState.SUPERSEDED.value
    write_back.last_error = f"Replaced by write-back {newer}, which carries the latest answer."
    db.session.commit()
    return write_back.state


def release(write_back_id: int) -> str:
    """Put a write-back that stopped while running (a killed worker) back in line."""
    return _settle(db.session.get(WriteBack, write_back_id), WriteBackState.PENDING)


def retry_write_back(write_back_id: int) -> bool:
    """Put a failed write-back back in line at once (the admin's "retry")."""
    write_back = db.session.get(WriteBack, write_back_id)
    if write_back is None or write_back.state not in (
        WriteBackState.FAILED.value,
        WriteBackState.PENDING.value,
    ):
        return False
    if _settle(write_back, WriteBackState.PENDING, next_attempt_at=None) != "pending":
        return True  # a newer pending write-back carries it; that one is in line
    enqueue_write_back(write_back.id)
    return True
