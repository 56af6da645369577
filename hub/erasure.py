"""Erasing a person: every delivery, rating and comment of an address goes, the address
stays on the suppression list as a keyed hash, an audit entry records the erasure
without the address, and a job asks each helpdesk to remove the hub's notes and
attribute values where its API allows."""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from dataclasses import asdict
from dataclasses import dataclass
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import current_app
from marshmallow import ValidationError
from sqlalchemy import ColumnElement
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import or_
from sqlalchemy import select

from hub.addresses import normalise_email
from hub.connections import open_helpdesk
from hub.extensions import db
from hub.helpdesk import RateLimited
from hub.helpdesk import TicketTraces
from hub.jobs import WRITE_BACKS
from hub.jobs import enqueue_once
from hub.jobs import forget_enqueued
from hub.models import AuditEntry
from hub.models import Connection
from hub.models import Delivery
from hub.models import HelpdeskErasure
from hub.models import Rating
from hub.models import Survey
from hub.models import User
from hub.models import WriteBack
from hub.models import WriteBackState
from hub.models import utcnow
from hub.suppressions import ensure_key
from hub.suppressions import is_suppressed
from hub.suppressions import stage_suppression
from hub.surveys import MetricMissing
from hub.surveys import settings_of
from hub.webhooks.events import forget_events

log = logging.getLogger(__name__)

ACTION = "person.erased"
#: Tries of a helpdesk clean-up before it is given up (backoff: about a day in all).
MAX_ATTEMPTS = 30
#: Audit entries whose clean-up the reconciler re-enqueues per run.
BATCH = 100


class InvalidAddress(ValueError):
    """The text given is not an email address."""


class AddressOfHubUser(ValueError):
    """The address belongs to a person who signs in to the hub, not to a customer."""


@dataclass(frozen=True)
class Found:
    """What the hub holds of one address: what an erasure removes."""

    deliveries: int = 0
    ratings: int = 0
    comments: int = 0
    write_backs: int = 0
    #: Tickets the hub wrote a note or an attribute into.
    helpdesk_tickets: int = 0
    outbox_messages: int = 0
    already_suppressed: bool = False


@dataclass(frozen=True)
class Erasure:
    """What an erasure removed, and the audit entry that records it."""

    found: Found
    audit_entry_id: int


def checked_address(email: str) -> str:
    """The address in normal form; `InvalidAddress` when it is none, `AddressOfHubUser`
    when it signs in to the hub (erasing is for customers: archive the user instead)."""
    address = normalise_email(email) if isinstance(email, str) and len(email) <= 320 else None
    if address is None:
        raise InvalidAddress("This is not a valid email address.")
    user = db.session.execute(
        select(User.id).where(func.lower(func.trim(User.email)) == address)
    ).first()
    if user is not None:
        raise AddressOfHubUser(
            "This address belongs to a SurveyHub user, not to a customer; archive the "
            "user on the Agents page instead."
        )
    return address


def _matches(address: str) -> ColumnElement[bool]:
    # Rows before the hub lower-cased whole addresses, and invalid ones kept as given,
    # may hold any case and surrounding spaces.
    return func.lower(func.trim(Delivery.requester_email)) == address


def _delivery_ids(address: str):
    return select(Delivery.id).where(_matches(address))


def _rating_ids(address: str):
    return select(Rating.id).where(Rating.delivery_id.in_(_delivery_ids(address)))


def _outbox_files(address: str) -> list[Path]:
    folder = current_app.config.get("OUTBOX_DIR")
    if not folder or not Path(folder).is_dir():
        return []
    needle = address.encode()
    return [path for path in Path(folder).glob("*.eml") if needle in path.read_bytes().lower()]


def _count(query) -> int:
    return db.session.execute(select(func.count()).select_from(query.subquery())).scalar_one()


def _traces(address: str) -> dict[tuple[int, str], TicketTraces]:
    """What the hub wrote into helpdesk tickets for this address, by (connection, ticket):
    attributes of ratings with a write-back that ran, and the notes it posted."""
    rows = db.session.execute(
        select(
            Survey,
            Delivery.ticket_id,
            WriteBack.helpdesk_note_id,
        )
        .join(Rating, Rating.id == WriteBack.rating_id)
        .join(Delivery, Delivery.id == Rating.delivery_id)
        .join(Survey, Survey.id == Delivery.survey_id)
        .where(
            _matches(address),
            or_(WriteBack.attempts > 0, WriteBack.state != WriteBackState.PENDING.value),
        )
    ).all()
    attributes: dict[tuple[int, str], set[str]] = defaultdict(set)
    notes: dict[tuple[int, str], set[str]] = defaultdict(set)
    for survey, ticket_id, note_id in rows:
        place = (survey.connection_id, ticket_id)
        name = _attribute_name(survey)
        if name:
            attributes[place].add(name)
        else:
            attributes.setdefault(place, set())
        if note_id:
            notes[place].add(note_id)
    return {
        place: TicketTraces(place[1], tuple(sorted(names)), tuple(sorted(notes[place])))
        for place, names in attributes.items()
    }


def _attribute_name(survey: Survey) -> str | None:
    try:
        return settings_of(survey)["attribute_name"]
    except (MetricMissing, ValidationError):  # the stored name, if any, is the best guess
        return (survey.settings or {}).get("attribute_name")


def find(email: str) -> Found:
    """What the hub holds of `email` (raises like `checked_address`)."""
    address = checked_address(email)
    ratings = select(Rating.id).where(Rating.delivery_id.in_(_delivery_ids(address)))
    return Found(
        deliveries=_count(_delivery_ids(address)),
        ratings=_count(ratings),
        comments=_count(ratings.where(Rating.comment != "")),
        write_backs=_count(select(WriteBack.id).where(WriteBack.rating_id.in_(ratings))),
        helpdesk_tickets=len(_traces(address)),
        outbox_messages=len(_outbox_files(address)),
        already_suppressed=is_suppressed(address),
    )


def erase_person(email: str, actor: User | None = None) -> Erasure:
    """Erase `email` in one transaction and queue the helpdesk clean-up; idempotent (an
    address with nothing left is still suppressed, and audited again)."""
    address = checked_address(email)
    ensure_key()  # committed on its own, before the erasure's transaction
    found = find(address)
    traces = _traces(address)
    comments = found.comments
    forget_events(_delivery_ids(address))  # before the ids they name are gone
    removed_write_backs = db.session.execute(
        delete(WriteBack).where(WriteBack.rating_id.in_(_rating_ids(address))),
        execution_options={"synchronize_session": False},
    ).rowcount
    removed_ratings = db.session.execute(
        delete(Rating).where(Rating.delivery_id.in_(_delivery_ids(address))),
        execution_options={"synchronize_session": False},
    ).rowcount
    removed_deliveries = db.session.execute(
        delete(Delivery).where(_matches(address)),
        execution_options={"synchronize_session": False},
    ).rowcount
    digest = stage_suppression(address, "erased")
    outbox = _outbox_files(address)
    found = Found(
        deliveries=removed_deliveries,
        ratings=removed_ratings,
        comments=comments,
        write_backs=removed_write_backs,
        helpdesk_tickets=len(traces),
        outbox_messages=len(outbox),
        already_suppressed=found.already_suppressed,
    )
    entry = AuditEntry(
        actor_user_id=actor.id if actor is not None else None,
        action=ACTION,
        details={
            # The suppression entry's hash: it finds this entry again for someone who
            # gives the address, and tells nothing to anyone else.
            "suppression_hash": digest,
            "removed": {k: v for k, v in asdict(found).items() if k != "already_suppressed"},
            "already_suppressed": found.already_suppressed,
            "helpdesk": {"state": "pending" if traces else "nothing to do", "tickets": len(traces)},
        },
    )
    db.session.add(entry)
    db.session.flush()
    for (connection_id, _ticket), trace in traces.items():
        db.session.add(
            HelpdeskErasure(
                audit_entry_id=entry.id,
                connection_id=connection_id,
                ticket_id=trace.ticket_id,
                attribute_names=list(trace.attribute_names),
                note_ids=list(trace.note_ids),
            )
        )
    db.session.commit()
    for path in outbox:  # the dev-mode Outbox's copies of emails sent to the address
        path.unlink(missing_ok=True)
    log.info("Erased a person (audit entry %s): %s", entry.id, found)
    if traces:
        enqueue_helpdesk_erasure(entry.id)
    return Erasure(found=found, audit_entry_id=entry.id)


def enqueue_helpdesk_erasure(audit_entry_id: int) -> bool:
    """Hand an erasure's helpdesk clean-up to a worker (it holds only the entry's id)."""
    return enqueue_once(
        run_helpdesk_erasure,
        f"erasure:{audit_entry_id}",
        audit_entry_id,
        queue=WRITE_BACKS,
        job_timeout=1800,
    )


def enqueue_due_erasures(now: datetime) -> int:
    """Re-enqueue the helpdesk clean-ups that are due (the reconciler's part)."""
    due = db.session.execute(
        select(HelpdeskErasure.audit_entry_id)
        .where(
            or_(
                HelpdeskErasure.next_attempt_at.is_(None),
                HelpdeskErasure.next_attempt_at <= now,
            )
        )
        .distinct()
        .limit(BATCH)
    ).scalars()
    return sum(enqueue_helpdesk_erasure(entry_id) for entry_id in due.all())


def retry_delay(attempts: int) -> timedelta:
    """Backoff between tries: 30 s, 1, 2, 4 … minutes, at most an hour."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


def run_helpdesk_erasure(audit_entry_id: int) -> str:
    """Ask each helpdesk to remove what the hub wrote for an erased person; record in
    the audit entry what was removed, what stays and what failed. Returns its state."""
    forget_enqueued(f"erasure:{audit_entry_id}")
    now = utcnow()
    entry = db.session.get(AuditEntry, audit_entry_id)
    if entry is None:
        return "missing"
    tasks = (
        db.session.execute(
            select(HelpdeskErasure)
            .where(
                HelpdeskErasure.audit_entry_id == audit_entry_id,
                or_(
                    HelpdeskErasure.next_attempt_at.is_(None),
                    HelpdeskErasure.next_attempt_at <= now,
                ),
            )
            .order_by(HelpdeskErasure.id)
        )
        .scalars()
        .all()
    )
    by_connection: dict[int, list[HelpdeskErasure]] = defaultdict(list)
    for task in tasks:
        by_connection[task.connection_id].append(task)
    helpdesk = copy.deepcopy(entry.details.get("helpdesk") or {})
    for connection_id, group in by_connection.items():
        _erase_on(connection_id, group, helpdesk, now)
    remaining = db.session.execute(
        select(func.count(HelpdeskErasure.id)).where(
            HelpdeskErasure.audit_entry_id == audit_entry_id
        )
    ).scalar_one()
    if not remaining:
        helpdesk["state"] = "done" if not helpdesk.get("failed") else "failed"
    details = dict(entry.details)
    details["helpdesk"] = helpdesk
    entry.details = details
    db.session.commit()
    return helpdesk.get("state", "pending")


def _erase_on(
    connection_id: int, group: list[HelpdeskErasure], helpdesk: dict[str, Any], now: datetime
) -> None:
    traces = [
        TicketTraces(task.ticket_id, tuple(task.attribute_names), tuple(task.note_ids))
        for task in group
    ]
    try:
        connection = db.session.get(Connection, connection_id)
        left = open_helpdesk(connection).erase(traces)
    except Exception as exc:  # an outage, a changed key, a plugin away: retry later
        attempts = max(task.attempts for task in group) + 1
        log.warning("Erasure clean-up on connection %s failed: %s", connection_id, exc)
        if attempts >= MAX_ATTEMPTS:
            helpdesk.setdefault("failed", []).append(
                {
                    "connection": connection_id,
                    "error": str(exc),
                    "tickets": [task.ticket_id for task in group],
                }
            )
            for task in group:
                db.session.delete(task)
            return
        when = exc.resume_at(now) if isinstance(exc, RateLimited) else now + retry_delay(attempts)
        for task in group:
            task.attempts = attempts
            task.last_error = str(exc)
            task.next_attempt_at = when
        return
    helpdesk["cleaned"] = helpdesk.get("cleaned", 0) + len(group) - len(left)
    if left:
        # Conversation and note ids only: an admin can remove these notes by hand.
        helpdesk.setdefault("left", []).extend(
            {"connection": connection_id, "ticket": trace.ticket_id, "notes": list(trace.note_ids)}
            for trace in left
        )
    for task in group:
        db.session.delete(task)
