"""Sending: re-check tickets in batches, then send each survey email at most once."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

from flask import current_app
from marshmallow import ValidationError
from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy import Row
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from hub.connections import open_helpdesk
from hub.emails import build_email
from hub.emails import recipient_of
from hub.extensions import db
from hub.extensions import rows_kept
from hub.helpdesk import HelpdeskError
from hub.helpdesk import RateLimited
from hub.helpdesk import Ticket
from hub.jobs import CONTROL
from hub.jobs import MARKER_TTL
from hub.jobs import SENDS
from hub.jobs import WRITE_BACKS
from hub.jobs import forget_enqueued
from hub.jobs import get_queue
from hub.jobs import mark_enqueued
from hub.logs import bind as bind_log
from hub.mail import Mailer
from hub.mail import PermanentMailError
from hub.mail import TemporaryMailError
from hub.mail import UncertainMailError
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Survey
from hub.models import utcnow
from hub.pipeline.decide import TICKET_GONE
from hub.pipeline.decide import UNSUBSCRIBED
from hub.pipeline.decide import RequesterChecks
from hub.pipeline.decide import skip_reason
from hub.pipeline.own_writes import own_writes_of
from hub.pipeline.own_writes import without_own_writes
from hub.suppressions import ensure_key
from hub.suppressions import is_suppressed
from hub.suppressions import not_suppressed
from hub.surveys import settings_of
from hub.webhooks.events import active_subscriptions
from hub.webhooks.events import delivery_sent

log = logging.getLogger(__name__)

#: Give up on a mail server that keeps refusing after this many tries (about a day:
#: 1, 2, 4 … 32 minutes, then hourly).
MAX_ATTEMPTS = 30


#: How long a queued send keeps the reconciler from queueing it again: a long queue of
#: sends may wait this long; a job lost with Redis is queued again after it.
SEND_MARKER_TTL = 3 * MARKER_TTL
#: A send job looks every this many emails whether write-backs or the reconciler wait,
#: and if so hands the rest of its batch back, so a worker never sits on a long batch
#: while a rating waits for its write-back.
YIELD_EVERY = 10

#: The deliveries table: claims and outcomes are plain (Core) statements, conditional on
#: the row's state, without the ORM's bookkeeping for rows it might hold.
ROWS = Delivery.__table__

#: Deliveries per send job: their tickets are re-checked together (one helpdesk request
#: where the connector fetches in batches) and their emails share one SMTP connection.
SEND_BATCH = 100


def enqueue_send(delivery_id: int) -> bool:
    """Hand one pending delivery to a worker (once, until its job starts)."""
    return enqueue_sends([delivery_id]) == 1


def enqueue_sends(delivery_ids: Iterable[int]) -> int:
    """Hand pending deliveries to workers, `SEND_BATCH` per job; return how many went.

    A delivery already waiting in a job is left out, so the reconciler and the scan
    never queue the same send twice while Redis holds the marker.
    """
    ids = list(dict.fromkeys(delivery_ids))
    if not ids:
        return 0
    try:
        marked = mark_enqueued([f"send:{i}" for i in ids], SEND_MARKER_TTL)
        fresh = [i for i, new in zip(ids, marked, strict=True) if new]
        queue = get_queue(SENDS)
        for start in range(0, len(fresh), SEND_BATCH):
            queue.enqueue(send_deliveries, fresh[start : start + SEND_BATCH], job_timeout=1800)
    except RedisError as exc:
        log.warning("Could not enqueue %s sends: %s", len(ids), exc)
        return 0  # the reconciler enqueues them again once Redis is back
    return len(fresh)


def retry_delay(attempts: int) -> timedelta:
    """Backoff between tries: 1, 2, 4 … minutes, at most an hour."""
    return timedelta(minutes=min(60, 2 ** max(0, attempts - 1)))


def send_delivery(delivery_id: int) -> str:
    """Re-check one pending delivery's ticket and send its email; return the new state."""
    return send_deliveries([delivery_id]).get(delivery_id, "missing")


def send_deliveries(delivery_ids: list[int]) -> dict[int, str]:
    """Re-check the tickets of pending deliveries together, then send each email at most
    once; return each delivery's state after.

    Each delivery's "enqueued" marker is kept until the job is over, so the reconciler
    does not queue a copy of a batch that is running.
    """
    turn = Turn(delivery_ids, current_app.config["HUB_SENDING_TIMEOUT"])
    try:
        with rows_kept():
            return _send_deliveries(delivery_ids, turn)
    finally:
        forget_enqueued(*(f"send:{i}" for i in delivery_ids if i not in turn.handed_back))


def _send_deliveries(delivery_ids: list[int], turn: Turn) -> dict[int, str]:
    now = utcnow()
    states: dict[int, str] = {}
    by_connection: dict[int, list[Delivery]] = {}
    query = (
        select(Delivery)
        .where(Delivery.id.in_(delivery_ids))
        .options(joinedload(Delivery.survey))
        .order_by(Delivery.id)
    )
    for delivery in db.session.execute(query).scalars():
        not_due = delivery.next_attempt_at is not None and delivery.next_attempt_at > now
        if delivery.state != DeliveryState.PENDING or not_due:
            states[delivery.id] = delivery.state
        elif not delivery.survey.active:
            # A scan that was running while the survey was deactivated may still have
            # recorded it: cancel it like the deactivation did the others.
            states[delivery.id] = _set(
                delivery, DeliveryState.CANCELLED, error="The survey was deactivated."
            )
        else:
            by_connection.setdefault(delivery.survey.connection_id, []).append(delivery)
    mailer = LazyMailer(current_app.config)
    try:
        for deliveries in by_connection.values():
            states.update(_check_and_send_all(deliveries, mailer, now, turn))
    finally:
        mailer.close()
    return states


class Turn:
    """A running send job's place in line.

    While the job runs, its deliveries' "enqueued" markers last `alive` seconds and are
    renewed as it goes: the reconciler does not queue copies of a running batch, yet a
    killed worker's deliveries are queued again soon after. Every `YIELD_EVERY` emails it
    says whether to hand the rest of the batch back: only inside a worker, and only when
    more urgent work (write-backs, the reconciler) is queued.
    """

    def __init__(self, delivery_ids: list[int], alive: float) -> None:
        self.in_worker = get_current_job() is not None
        self.markers = [f"send:{delivery_id}" for delivery_id in delivery_ids]
        self.alive = max(1, int(alive))
        self.done = 0
        self.handed_back: set[int] = set()
        self._renew()

    def _renew(self) -> None:
        if self.in_worker:
            with contextlib.suppress(RedisError):
                mark_enqueued(self.markers, self.alive, only_new=False)

    def should_yield(self) -> bool:
        self.done += 1
        if not self.in_worker or self.done % YIELD_EVERY:
            return False
        self._renew()
        try:
            return any(get_queue(name).count for name in (CONTROL, WRITE_BACKS))
        except RedisError:
            return False

    def hand_back(self, delivery_ids: list[int]) -> None:
        """Queue the rest of the batch again, first in line among the sends; their
        markers stay, so the reconciler does not queue them a second time."""
        try:
            get_queue(SENDS).enqueue(send_deliveries, delivery_ids, job_timeout=1800, at_front=True)
        except RedisError:
            return  # the reconciler queues them again
        self.handed_back.update(delivery_ids)


class LazyMailer:
    """One SMTP connection for a batch, opened on the first email; a server that cannot
    be reached is tried once per batch, not once per email."""

    def __init__(self, config) -> None:
        self.mailer = Mailer(config)
        self.opened = False
        self.down: TemporaryMailError | None = None

    def send(self, message) -> None:
        if self.down is not None:
            raise self.down
        if not self.opened:
            try:
                self.mailer.connect()
            except TemporaryMailError as exc:
                self.down = exc
                raise
            self.opened = True
        self.mailer.send(message)  # reconnects by itself after a broken connection

    def close(self) -> None:
        self.mailer.close()


@dataclass
class Batch:
    """What a send job reads once for one connection's deliveries, instead of once per
    email: the surveys' settings, the hub's own writes to the tickets, the requester
    checks' suppressions and recent deliveries, the suppression key and the webhook
    subscriptions."""

    own_writes: dict[str, Any]
    checks: RequesterChecks
    key: bytes
    active: list[Row]  # active_subscriptions()
    now: datetime
    settings: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Emails sent whose outcome waits to be written with the next statement that
    #: commits (the next claim, usually): one commit per email instead of two.
    sent: list[tuple[Delivery, dict[str, Any]]] = field(default_factory=list)
    #: Sent emails whose row had moved on when their outcome was written.
    moved: list[int] = field(default_factory=list)

    def settings_of(self, survey: Survey) -> dict[str, Any]:
        if survey.id not in self.settings:
            self.settings[survey.id] = settings_of(survey)
        return self.settings[survey.id]

    def write_sent(self) -> None:
        """Add the waiting outcomes (and their webhook events) to the transaction;
        they are forgotten only by `committed`, so a failed commit writes them again."""
        for delivery, values in self.sent:
            delivery_sent(delivery, self.now, self.active)
            if not _update(delivery, DeliveryState.SENDING, DeliveryState.SENT, values):
                self.moved.append(delivery.id)

    def committed(self) -> None:
        self.sent.clear()

    def commit(self) -> None:
        """Commit, with the waiting outcomes."""
        if self.sent:
            self.write_sent()
        db.session.commit()
        self.committed()


def _read_batch(deliveries: list[Delivery], connection_id: int, now) -> Batch:
    settings: dict[int, dict[str, Any]] = {}
    for survey in {d.survey_id: d.survey for d in deliveries}.values():
        # Broken settings fail each of that survey's deliveries, as they would alone.
        with contextlib.suppress(ValidationError):
            settings[survey.id] = settings_of(survey)
    cooldowns = {survey_id: values["cooldown_days"] for survey_id, values in settings.items()}
    return Batch(
        own_writes=own_writes_of(connection_id, [d.ticket_id for d in deliveries]),
        checks=RequesterChecks([d.requester_email for d in deliveries], cooldowns, now),
        # Made now if nothing was ever suppressed: every claim can then check the list.
        key=ensure_key(),
        active=active_subscriptions(),
        now=now,
        settings=settings,
    )


def _check_and_send_all(
    deliveries: list[Delivery], mailer: LazyMailer, now, turn: Turn
) -> dict[int, str]:
    """Re-check one connection's tickets in one go, then decide and send each."""
    survey = deliveries[0].survey
    states: dict[int, str] = {}
    try:
        helpdesk = open_helpdesk(survey.connection)
        tickets = helpdesk.fetch_tickets([d.ticket_id for d in deliveries])
    except HelpdeskError as exc:
        # Retryable or not (a revoked key, a missing role), the admin or time can fix
        # it; the deliveries wait instead of being lost.
        when = (
            exc.resume_at(now)
            if isinstance(exc, RateLimited)
            else now + timedelta(minutes=1 if exc.retryable else 15)
        )
        for delivery in deliveries:
            states[delivery.id] = _later(delivery, f"Re-checking the ticket failed: {exc}", when)
        return states
    except Exception as exc:  # a bug or a missing plugin: show it, retry later
        db.session.rollback()
        log.exception("Deliveries %s could not be re-checked", [d.id for d in deliveries])
        for delivery in deliveries:
            states[delivery.id] = _later(
                db.session.get(Delivery, delivery.id),
                f"Unexpected error: {exc}",
                now + timedelta(minutes=15),
            )
        return states
    batch = _read_batch(deliveries, survey.connection_id, now)
    try:
        _send_each(deliveries, tickets, mailer, now, turn, batch, states)
    except BaseException:
        # Whatever went wrong, the emails that went out are recorded as sent.
        db.session.rollback()
        with contextlib.suppress(Exception):
            batch.commit()
        raise
    batch.commit()  # the last email's outcome
    for delivery_id in batch.moved:  # rare: another job moved the row on meanwhile
        current = db.session.execute(select(ROWS.c.state).where(ROWS.c.id == delivery_id))
        states[delivery_id] = current.scalar() or "missing"
    return states


def _send_each(
    deliveries: list[Delivery], tickets, mailer: LazyMailer, now, turn: Turn, batch, states
) -> None:
    for position, delivery in enumerate(deliveries):
        if position and turn.should_yield():
            rest = [d.id for d in deliveries[position:]]
            log.info("Handing %s sends back: more urgent work is waiting", len(rest))
            turn.hand_back(rest)
            states.update(dict.fromkeys(rest, DeliveryState.PENDING.value))
            break
        try:
            states[delivery.id] = _decide_and_send(
                delivery, tickets.get(delivery.ticket_id), mailer, now, batch
            )
        except Exception as exc:  # a bug: show it on this delivery, go on with the rest
            db.session.rollback()
            log.exception("Delivery %s could not be processed", delivery.id)
            states[delivery.id] = _later(
                db.session.get(Delivery, delivery.id),
                f"Unexpected error: {exc}",
                now + timedelta(minutes=15),
                batch,
            )


def _decide_and_send(
    delivery: Delivery, ticket: Ticket | None, mailer: LazyMailer, now, batch: Batch
) -> str:
    bind_log(survey_id=delivery.survey_id)
    if ticket is None:
        return _skip(delivery, TICKET_GONE, batch)
    survey = delivery.survey
    settings = batch.settings_of(survey)
    # The address recorded at the scan: no customer lookup per send.
    ticket = without_own_writes(
        survey.connection_id,
        dataclasses.replace(
            ticket,
            requester_email=delivery.requester_email,
            requester_name=delivery.requester_name,
            requester_locale=delivery.locale,
        ),
        known=batch.own_writes,
    )
    reason = skip_reason(ticket, survey.id, settings, now, batch.checks, delivery_id=delivery.id)
    if reason:
        return _skip(delivery, reason, batch)
    message = build_email(survey, recipient_of(delivery), settings=settings)
    # Claimed at the real time, not the batch's start: the reconciler's "stuck in
    # sending" timeout counts from here.
    if not _claim(delivery, utcnow(), ticket.updated_at, batch):
        # Unsubscribed a moment ago, or taken by another worker.
        unsubscribed = is_suppressed(delivery.requester_email or "")
        if unsubscribed and _skip(delivery, UNSUBSCRIBED, batch) == DeliveryState.SKIPPED.value:
            return DeliveryState.SKIPPED.value
        return "taken"  # another worker got there first
    try:
        mailer.send(message)
    except UncertainMailError as exc:
        return _finish(delivery, DeliveryState.UNKNOWN, batch, error=str(exc))
    except TemporaryMailError as exc:
        db.session.refresh(delivery)
        if delivery.attempts >= MAX_ATTEMPTS:
            error = f"Gave up after {delivery.attempts} tries: {exc}"
            return _finish(delivery, DeliveryState.FAILED, batch, error=error)
        # Nothing was sent: back in line.
        when = now + retry_delay(delivery.attempts)
        return _finish(delivery, DeliveryState.PENDING, batch, error=str(exc), next_attempt_at=when)
    except PermanentMailError as exc:
        return _finish(delivery, DeliveryState.FAILED, batch, error=str(exc))
    # Written (with the `delivery.sent` webhook event) in the next claim's transaction:
    # until then the row says `sending`, which a killed worker leaves as `unknown`,
    # exactly as a crash between sending and a commit of its own would.
    values = {"sent_at": utcnow(), "message_id": message["Message-ID"], "error": ""}
    batch.sent.append((delivery, values))
    log.info("Sent survey for ticket %s to %s", delivery.ticket_id, delivery.requester_email)
    return DeliveryState.SENT.value


def _claim(delivery: Delivery, now, ticket_updated_at, batch: Batch) -> bool:
    """Move the row from pending to sending, unless its address is suppressed; only one
    worker can succeed. The previous email's outcome is committed with it.

    From here on a crash leaves the row in `sending`, which the reconciler turns into
    `unknown`: the email may have gone out, so it is never sent again by itself.
    """
    conditions = [ROWS.c.id == delivery.id, ROWS.c.state == DeliveryState.PENDING.value]
    if delivery.requester_email:
        conditions.append(not_suppressed(batch.key, delivery.requester_email))
    batch.write_sent()
    values = {
        "state": DeliveryState.SENDING.value,
        "updated_at": now,
        "ticket_updated_at": ticket_updated_at,
    }
    result = db.session.execute(
        update(ROWS).where(*conditions).values(attempts=ROWS.c.attempts + 1, **values)
    )
    db.session.commit()
    batch.committed()
    claimed = result.rowcount == 1
    if claimed and "attempts" in delivery.__dict__:
        values["attempts"] = delivery.attempts + 1
    _keep_in_step(delivery, values if claimed else None)
    return claimed


def _update(
    delivery: Delivery, expected: DeliveryState, state: DeliveryState | None, values: dict
) -> bool:
    """Change the row while it is still in `expected` (no commit); whether it was."""
    values = {**values, "updated_at": utcnow()}
    if state is not None:
        values["state"] = state.value
    result = db.session.execute(
        update(ROWS).where(ROWS.c.id == delivery.id, ROWS.c.state == expected.value).values(values)
    )
    _keep_in_step(delivery, values if result.rowcount == 1 else None)
    return result.rowcount == 1


def _keep_in_step(delivery: Delivery, values: dict | None) -> None:
    """Give the loaded row the values the statement wrote (the job keeps its rows
    loaded, and callers may read them after); a row that moved on is read again."""
    if values is None:
        db.session.expire(delivery)
        return
    for name, value in values.items():
        set_committed_value(delivery, name, value)


def _set(
    delivery: Delivery,
    state: DeliveryState | None = None,
    expected: DeliveryState = DeliveryState.PENDING,
    batch: Batch | None = None,
    **values,
) -> str:
    """Update the row only while it is still in `expected`, and commit (with the
    batch's waiting outcomes); return its state after.

    Another job may have moved it on meanwhile (a duplicate job, the reconciler), so
    every change is conditional on the state this job saw.
    """
    if batch is not None and batch.sent:
        batch.write_sent()
    changed = _update(delivery, expected, state, values)
    db.session.commit()
    if batch is not None:
        batch.committed()
    if changed:
        return (state or expected).value
    # Moved on by someone else: read what it is now.
    current = db.session.execute(select(ROWS.c.state).where(ROWS.c.id == delivery.id))
    return current.scalar() or "missing"


def _skip(delivery: Delivery, reason: str, batch: Batch | None = None) -> str:
    if batch is not None:
        batch.checks.drop(delivery.id)  # no longer counts for the batch's cooldowns
    return _set(delivery, DeliveryState.SKIPPED, batch=batch, skip_reason=reason)


def _later(delivery: Delivery, error: str, when, batch: Batch | None = None) -> str:
    log.info("Delivery %s: %s; next try at %s", delivery.id, error, when.isoformat())
    return _set(delivery, batch=batch, error=error, next_attempt_at=when)


def _finish(delivery: Delivery, state: DeliveryState, batch: Batch, **values) -> str:
    """Record how a claimed (`sending`) delivery ended without being sent."""
    log.warning("Delivery %s is %s: %s", delivery.id, state.value, values.get("error"))
    return _set(delivery, state, expected=DeliveryState.SENDING, batch=batch, **values)
