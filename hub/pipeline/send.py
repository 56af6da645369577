"""Sending: re-check tickets in batches, then send each survey email at most once."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from rq import get_current_job
from sqlalchemy import select
from sqlalchemy import update

from hub.connections import open_helpdesk
from hub.emails import Suppressed
from hub.emails import build_email
from hub.emails import recipient_of
from hub.extensions import db
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
from hub.models import utcnow
from hub.pipeline.decide import TICKET_GONE
from hub.pipeline.decide import UNSUBSCRIBED
from hub.pipeline.decide import skip_reason
from hub.pipeline.own_writes import without_own_writes
from hub.surveys import settings_of
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
        return _send_deliveries(delivery_ids, turn)
    finally:
        forget_enqueued(*(f"send:{i}" for i in delivery_ids if i not in turn.handed_back))


def _send_deliveries(delivery_ids: list[int], turn: Turn) -> dict[int, str]:
    now = utcnow()
    states: dict[int, str] = {}
    by_connection: dict[int, list[Delivery]] = {}
    rows = db.session.execute(select(Delivery).where(Delivery.id.in_(delivery_ids))).scalars()
    for delivery in rows:
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
    for position, delivery in enumerate(deliveries):
        if position and turn.should_yield():
            rest = [d.id for d in deliveries[position:]]
            log.info("Handing %s sends back: more urgent work is waiting", len(rest))
            turn.hand_back(rest)
            states.update(dict.fromkeys(rest, DeliveryState.PENDING.value))
            break
        try:
            states[delivery.id] = _decide_and_send(
                delivery, tickets.get(delivery.ticket_id), mailer, now
            )
        except Exception as exc:  # a bug: show it on this delivery, go on with the rest
            db.session.rollback()
            log.exception("Delivery %s could not be processed", delivery.id)
            states[delivery.id] = _later(
                db.session.get(Delivery, delivery.id),
                f"Unexpected error: {exc}",
                now + timedelta(minutes=15),
            )
    return states


def _decide_and_send(delivery: Delivery, ticket: Ticket | None, mailer: LazyMailer, now) -> str:
    bind_log(survey_id=delivery.survey_id)
    if ticket is None:
        return _skip(delivery, TICKET_GONE)
    survey = delivery.survey
    settings = settings_of(survey)
    # The address recorded at the scan: no customer lookup per send.
    ticket = without_own_writes(
        survey.connection_id,
        dataclasses.replace(
            ticket,
            requester_email=delivery.requester_email,
            requester_name=delivery.requester_name,
            requester_locale=delivery.locale,
        ),
    )
    reason = skip_reason(ticket, survey.id, settings, now, delivery_id=delivery.id)
    if reason:
        return _skip(delivery, reason)
    try:
        message = build_email(survey, recipient_of(delivery))
    except Suppressed:
        return _skip(delivery, UNSUBSCRIBED)
    # Claimed at the real time, not the batch's start: the reconciler's "stuck in
    # sending" timeout counts from here.
    if not _claim(delivery.id, utcnow(), ticket.updated_at):
        return "taken"  # another worker got there first
    try:
        mailer.send(message)
    except UncertainMailError as exc:
        return _finish(delivery, DeliveryState.UNKNOWN, error=str(exc))
    except TemporaryMailError as exc:
        db.session.refresh(delivery)
        if delivery.attempts >= MAX_ATTEMPTS:
            error = f"Gave up after {delivery.attempts} tries: {exc}"
            return _finish(delivery, DeliveryState.FAILED, error=error)
        # Nothing was sent: back in line.
        when = now + retry_delay(delivery.attempts)
        return _finish(delivery, DeliveryState.PENDING, error=str(exc), next_attempt_at=when)
    except PermanentMailError as exc:
        return _finish(delivery, DeliveryState.FAILED, error=str(exc))
    delivery_sent(delivery, now)  # webhooks: committed with the state below
    state = _finish(
        delivery,
        DeliveryState.SENT,
        sent_at=utcnow(),
        message_id=message["Message-ID"],
        error="",
    )
    log.info("Sent survey for ticket %s to %s", delivery.ticket_id, delivery.requester_email)
    return state


def _claim(delivery_id: int, now, ticket_updated_at) -> bool:
    """Move the row from pending to sending; only one worker can succeed.

    From here on a crash leaves the row in `sending`, which the reconciler turns into
    `unknown`: the email may have gone out, so it is never sent again by itself.
    """
    result = db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, Delivery.state == DeliveryState.PENDING.value)
        .values(
            state=DeliveryState.SENDING.value,
            attempts=Delivery.attempts + 1,
            updated_at=now,
            ticket_updated_at=ticket_updated_at,
        )
    )
    db.session.commit()
    return result.rowcount == 1


def _set(
    delivery: Delivery,
    state: DeliveryState | None = None,
    expected: DeliveryState = DeliveryState.PENDING,
    **values,
) -> str:
    """Update the row only while it is still in `expected`; return its state after.

    Another job may have moved it on meanwhile (a duplicate job, the reconciler), so
    every change is conditional on the state this job saw.
    """
    if state is not None:
        values["state"] = state.value
    db.session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id, Delivery.state == expected.value)
        .values(updated_at=utcnow(), **values)
    )
    db.session.commit()
    db.session.refresh(delivery)
    return delivery.state


def _skip(delivery: Delivery, reason: str) -> str:
    return _set(delivery, DeliveryState.SKIPPED, skip_reason=reason)


def _later(delivery: Delivery, error: str, when) -> str:
    log.info("Delivery %s: %s; next try at %s", delivery.id, error, when.isoformat())
    return _set(delivery, error=error, next_attempt_at=when)


def _finish(delivery: Delivery, state: DeliveryState, **values) -> str:
    """Record how a claimed (`sending`) delivery ended."""
    if state is not DeliveryState.SENT:
        log.warning("Delivery %s is %s: %s", delivery.id, state.value, values.get("error"))
    return _set(delivery, state, expected=DeliveryState.SENDING, **values)
