"""Scanning: ask the helpdesk for tickets that are due, decide each, record a delivery."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub.connections import open_helpdesk
from hub.extensions import db
from hub.helpdesk import ScanWindow
from hub.helpdesk import Ticket
from hub.jobs import enqueue_once
from hub.jobs import forget_enqueued
from hub.jobs import redis_connection
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Survey
from hub.models import utcnow
from hub.pipeline.decide import ALREADY_SURVEYED
from hub.pipeline.decide import skip_reason
from hub.pipeline.send import enqueue_send
from hub.suppressions import normalise_email
from hub.surveys import settings_of

log = logging.getLogger(__name__)

#: Re-read this much before the watermark: search indexes lag a little behind writes.
OVERLAP = timedelta(hours=1)
#: A scan may run this long (a look-back, a catch-up after an outage, rate-limit waits);
#: its lock lasts as long, so a killed worker's lock expires with it.
SCAN_TIMEOUT = 2 * 3600
SCAN_LOCK_SECONDS = SCAN_TIMEOUT


@dataclass
class ScanReport:
    """What one scan did (or, in a dry run, would do)."""

    survey_id: int
    seen: int = 0
    pending: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    already: int = 0
    locked: bool = False


Decision = Callable[[Ticket, str | None], None]


def enqueue_scan(survey_id: int) -> bool:
    """Enqueue a scan of one survey (one job id per survey, so scans never pile up)."""
    return enqueue_once(
        scan_survey,
        f"scan:{survey_id}",
        survey_id,
        job_id=f"scan-{survey_id}",
        job_timeout=SCAN_TIMEOUT,
    )


def _window(survey: Survey, settings: dict, now, lookback: timedelta) -> ScanWindow:
    if survey.active and survey.resolved_since:
        floor = survey.resolved_since
        # Re-read a little before the watermark (search indexes lag behind writes), but
        # never before the activation's floor: only tickets resolved since then count.
        resolved_after = max(floor, (survey.watermark or floor) - OVERLAP)
    else:  # a dry run previewing activation
        resolved_after = now - lookback
    return ScanWindow(
        resolved_after=resolved_after,
        resolved_before=now - timedelta(hours=settings["delay_hours"]),
        channels=tuple(settings["channels"]),
        statuses=tuple(settings["resolved_statuses"]),
    )


def _has_delivery(survey_id: int, ticket_id: str) -> bool:
    query = select(Delivery.id).where(
        Delivery.survey_id == survey_id, Delivery.ticket_id == ticket_id
    )
    return db.session.execute(query).first() is not None


def scan_survey(
    survey_id: int,
    dry_run: bool = False,
    on_decision: Decision | None = None,
    lookback_days: int = 0,
) -> ScanReport:
    """Scan one survey's helpdesk and record a `Delivery` per new ticket that is due.

    A dry run decides the same way and reports through `on_decision`, writing nothing;
    on an inactive survey it previews activation with `lookback_days`.
    Pending deliveries are handed to `send_delivery` jobs; the watermark advances only
    after a complete scan, so an interrupted one is repeated (its recorded tickets are
    recognised and not looked up again).
    """
    report = ScanReport(survey_id)
    if not dry_run:
        forget_enqueued(f"scan:{survey_id}")  # the next tick may enqueue the next scan
    survey = db.session.get(Survey, survey_id)
    if survey is None or not (survey.active or dry_run):
        return report
    lock = f"surveyhub:scan-lock:{survey_id}"
    if not dry_run and not _lock(lock):
        report.locked = True
        return report
    try:
        _scan(survey, report, dry_run, on_decision, timedelta(days=lookback_days))
    except Exception as exc:
        if not dry_run:
            db.session.rollback()
            survey.last_scan_error = str(exc)
            db.session.commit()
        raise
    finally:
        if not dry_run:
            _unlock(lock)
    return report


def _scan(
    survey: Survey, report: ScanReport, dry_run: bool, on_decision, lookback: timedelta
) -> None:
    now = utcnow()
    settings = settings_of(survey)
    window = _window(survey, settings, now, lookback)
    created: list[int] = []
    planned: set[str] | None = set() if dry_run else None
    answered: dict[str, bool] = {}  # what `known` told the connector, asked once

    def known(ticket_id: str) -> bool:
        answered[ticket_id] = _has_delivery(survey.id, ticket_id)
        return answered[ticket_id]

    for ticket in open_helpdesk(survey.connection).scan(window, known=known):
        report.seen += 1
        already = answered.pop(ticket.id, None)
        if already is None:  # a connector that does not ask
            already = _has_delivery(survey.id, ticket.id)
        if already:
            report.already += 1
            if on_decision:
                on_decision(ticket, ALREADY_SURVEYED)
            continue
        reason = skip_reason(ticket, survey.id, settings, now, planned=planned)
        if on_decision:
            on_decision(ticket, reason)
        if reason:
            report.skipped[reason] = report.skipped.get(reason, 0) + 1
        else:
            report.pending += 1
        if dry_run:
            if not reason:
                planned.add(normalise_email(ticket.requester_email or ""))
            continue
        delivery = Delivery(
            survey_id=survey.id,
            ticket_id=ticket.id,
            requester_email=normalise_email(ticket.requester_email or "") or None,
            requester_name=ticket.requester_name,
            locale=ticket.requester_locale,
            agent_ref=ticket.assignee_id,
            resolved_at=ticket.resolved_at,
            state=DeliveryState.SKIPPED.value if reason else DeliveryState.PENDING.value,
            skip_reason=reason,
        )
        # Committed at once: the next ticket's cooldown sees it, an interrupted scan keeps
        # its progress, and SQLite's write lock is never held across helpdesk calls.
        db.session.add(delivery)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            report.already += 1  # an overlapping scan recorded it first
            continue
        if not reason:
            created.append(delivery.id)
    if dry_run:
        return
    db.session.refresh(survey)
    if survey.watermark is None or window.resolved_before > survey.watermark:
        survey.watermark = window.resolved_before  # never backwards
    survey.last_scan_at = now
    survey.last_scan_error = ""
    db.session.commit()
    for delivery_id in created:
        enqueue_send(delivery_id)


def _lock(key: str) -> bool:
    try:
        return bool(redis_connection().set(key, 1, nx=True, ex=SCAN_LOCK_SECONDS))
    except RedisError:
        return True  # without Redis the unique (survey, ticket) rows still prevent duplicates


def _unlock(key: str) -> None:
    with contextlib.suppress(RedisError):
        redis_connection().delete(key)
