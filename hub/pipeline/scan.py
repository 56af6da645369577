"""Scanning: one pass over a connection's tickets decides every active survey on it.

The helpdesk's request budget is the scarce resource, so a scheduler tick scans each
connection once, for the widest window its active surveys need; each ticket is decided
for every survey whose own window holds it, and requesters are looked up once per scan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from hub.addresses import email_key
from hub.connections import open_helpdesk
from hub.extensions import db
from hub.extensions import rows_kept
from hub.helpdesk import Helpdesk
from hub.helpdesk import ScanWindow
from hub.helpdesk import Ticket
from hub.jobs import SCANS
from hub.jobs import enqueue_once
from hub.jobs import forget_enqueued
from hub.jobs import redis_connection
from hub.logs import bind as bind_log
from hub.models import Connection
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Survey
from hub.models import utcnow
from hub.observability import record_scan
from hub.pipeline.decide import ALREADY_SURVEYED
from hub.pipeline.decide import UNSUBSCRIBED
from hub.pipeline.decide import RequesterChecks
from hub.pipeline.decide import skip_reason
from hub.pipeline.decide import ticket_reason
from hub.pipeline.own_writes import own_writes_of
from hub.pipeline.own_writes import without_own_writes
from hub.pipeline.send import SEND_BATCH
from hub.pipeline.send import enqueue_sends
from hub.surveys import settings_of

log = logging.getLogger(__name__)

#: Re-read this much before the watermark: search indexes lag a little behind writes.
OVERLAP = timedelta(hours=1)
#: A scan may run this long (a look-back, a catch-up after an outage, rate-limit waits);
#: its lock lasts as long, so a killed worker's lock expires with it.
SCAN_TIMEOUT = 2 * 3600
#: The scan lock's lease, renewed while tickets arrive: a worker killed mid-scan holds
#: the connection's scans back for this long at most (not the job's two hours).
SCAN_LOCK_SECONDS = 300
LOCK_RENEW_SECONDS = 60.0
#: Tickets decided together at most (a connector's page is usually 100).
MAX_BATCH = 500
#: Ticket ids per `IN (...)` list: well under every database's parameter limit.
IN_CHUNK = 500
#: Statements that insert a batch of deliveries, skipping tickets that have one.
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
#: Log the progress of a long scan every this many tickets, and at least this often
#: (seconds) while tickets arrive (a scan slowed by the helpdesk's rate limit).
PROGRESS_EVERY = 1000
PROGRESS_SECONDS = 30.0


@dataclass
class ScanReport:
    """What one scan did (or, in a dry run, would do) for one survey."""

    survey_id: int
    seen: int = 0
    pending: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    already: int = 0
    locked: bool = False


#: Told of each decision: (survey id, ticket, skip reason or None).
Decision = Callable[[int, Ticket, str | None], None]


def enqueue_scan(connection_id: int) -> bool:
    """Enqueue a scan of one connection (one job id each, so scans never pile up)."""
    return enqueue_once(
        scan_connection,
        f"scan:{connection_id}",
        connection_id,
        queue=SCANS,
        job_id=f"scan-connection-{connection_id}",
        job_timeout=SCAN_TIMEOUT,
    )


def survey_window(survey: Survey, settings: dict, now: datetime, lookback: timedelta) -> ScanWindow:
    """The tickets one survey is due to decide: resolved since its watermark (less the
    overlap, never before activation) and at least its delay ago. A `lookback` (only
    dry runs give one to an active survey) previews the tickets resolved since then."""
    if survey.active and survey.resolved_since and not lookback:
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


def widest(windows: list[ScanWindow]) -> ScanWindow:
    """One window holding all of `windows`: what a single pass must ask the helpdesk."""

    def union(values: list[tuple[str, ...] | None]) -> tuple[str, ...] | None:
        if any(v is None for v in values):
            return None
        return tuple(sorted({item for v in values for item in v}))

    return ScanWindow(
        resolved_after=min(w.resolved_after for w in windows),
        resolved_before=max(w.resolved_before for w in windows),
        channels=union([w.channels for w in windows]),
        statuses=union([w.statuses for w in windows]),
    )


def _holds(window: ScanWindow, ticket: Ticket) -> bool:
    if ticket.resolved_at is None:
        return True
    return window.resolved_after <= ticket.resolved_at <= window.resolved_before


def scan_survey(
    survey_id: int,
    dry_run: bool = False,
    on_decision: Callable[[Ticket, str | None], None] | None = None,
    lookback_days: int = 0,
) -> ScanReport:
    """Scan for one survey alone (the CLI's `scan`, and its dry run).

    A dry run decides the same way and reports through `on_decision`, writing nothing;
    with `lookback_days` it previews the tickets resolved in those days (on an inactive
    survey: what activation with that look-back would do), without: what the next scan
    would decide.
    """
    survey = db.session.get(Survey, survey_id)
    if survey is None or not (survey.active or dry_run):
        return ScanReport(survey_id)
    told = None if on_decision is None else (lambda _s, ticket, reason: on_decision(ticket, reason))
    reports = scan_connection(
        survey.connection_id,
        survey_ids=[survey_id],
        dry_run=dry_run,
        on_decision=told,
        lookback_days=lookback_days,
    )
    return reports.get(survey_id) or ScanReport(survey_id, locked=True)


def scan_connection(
    connection_id: int,
    survey_ids: list[int] | None = None,
    dry_run: bool = False,
    on_decision: Decision | None = None,
    lookback_days: int = 0,
) -> dict[int, ScanReport]:
    """Scan one connection's helpdesk once and record a `Delivery` per survey and new
    ticket that is due; return a report per survey ({} when another scan holds the lock).

    Without `survey_ids`, every active survey of the connection is decided. Pending
    deliveries go to send jobs in batches; each survey's watermark advances only after
    a complete scan, so an interrupted one is repeated (its recorded tickets are
    recognised and not looked up again).
    """
    if not dry_run:
        forget_enqueued(f"scan:{connection_id}")  # the next tick may enqueue the next scan
    query = select(Survey).where(Survey.connection_id == connection_id).order_by(Survey.id)
    if survey_ids is not None:
        query = query.where(Survey.id.in_(survey_ids))
    surveys = [
        s for s in db.session.execute(query).scalars() if s.active or (dry_run and survey_ids)
    ]
    if not surveys:
        return {}
    lock = f"surveyhub:scan-lock:connection:{connection_id}"
    if not dry_run and not _lock(lock):
        return {}
    started = time.monotonic()
    try:
        # A look-back only ever previews: a real scan never reaches before activation.
        lookback = timedelta(days=lookback_days if dry_run else 0)
        with rows_kept():  # the surveys stay loaded across the scan's commits
            reports = _scan(surveys, dry_run, on_decision, lookback, None if dry_run else lock)
        if not dry_run:
            record_scan(connection_id, time.monotonic() - started)
        return reports
    except Exception as exc:
        if not dry_run:
            record_scan(connection_id, time.monotonic() - started, ok=False)
            db.session.rollback()
            for survey in surveys:
                db.session.refresh(survey)
                survey.last_scan_error = str(exc)
            db.session.commit()
        raise
    finally:
        if not dry_run:
            _unlock(lock)


class Known:
    """What the hub knows of a scan's tickets (their deliveries in the scanned surveys
    and its own writes to them), read a page at a time when the connector announces
    its pages (`Helpdesk.scan`'s `wants.page`), else one ticket at a time."""

    def __init__(self, connection_id: int, survey_ids: list[int], remember: bool) -> None:
        self.connection_id = connection_id
        self.survey_ids = survey_ids
        self.remember = remember
        self.done: dict[str, set[int]] = {}
        self.writes: dict[str, Any] = {}
        #: What `prepare` found for tickets asked about and not yet decided.
        self.prepared: dict[str, tuple[datetime | None, set[int]]] = {}

    def read(self, ticket_ids: list[str]) -> None:
        """Read what is known of these tickets (one query per table), forgetting the
        previous page's."""
        self.done = {ticket_id: set() for ticket_id in ticket_ids}
        ids = sorted(self.done)
        for start in range(0, len(ids), IN_CHUNK):
            rows = db.session.execute(
                select(Delivery.ticket_id, Delivery.survey_id).where(
                    Delivery.ticket_id.in_(ids[start : start + IN_CHUNK]),
                    Delivery.survey_id.in_(self.survey_ids),
                )
            )
            for ticket_id, survey_id in rows:
                self.done[ticket_id].add(survey_id)
        self.writes = own_writes_of(self.connection_id, ids)

    def prepare(self, ticket: Ticket) -> tuple[Ticket, set[int]]:
        """`ticket` with the hub's own writes discounted, and the surveys that have
        decided it already."""
        if ticket.id in self.prepared:
            updated_at, done = self.prepared.pop(ticket.id)
            return dataclasses.replace(ticket, updated_at=updated_at), done
        if ticket.id not in self.done:  # not announced: read it alone
            self.read([ticket.id])
        done = self.done[ticket.id]
        ticket = without_own_writes(
            self.connection_id, ticket, remember=self.remember, known=self.writes
        )
        return ticket, done

    def keep(self, ticket: Ticket, done: set[int]) -> None:
        """Keep what `prepare` found for the decision that follows."""
        self.prepared[ticket.id] = (ticket.updated_at, done)


def _scan(
    surveys: list[Survey],
    dry_run: bool,
    on_decision: Decision | None,
    lookback: timedelta,
    lock: str | None = None,
) -> dict[int, ScanReport]:
    now = utcnow()
    connection_id = surveys[0].connection_id
    plans = []
    for survey in surveys:
        settings = settings_of(survey)
        plans.append((survey, settings, survey_window(survey, settings, now, lookback)))
    reports = {survey.id: ScanReport(survey.id) for survey in surveys}
    ids = [survey.id for survey in surveys]
    cooldowns = {survey.id: settings["cooldown_days"] for survey, settings, _ in plans}
    created: list[int] = []
    known = Known(connection_id, ids, remember=not dry_run)
    # A dry run records nothing, so it remembers the addresses it would have sent to
    # for the whole run; a real scan's are in the database after each batch.
    planned: dict[int, set[str]] = {}
    connection = db.session.get(Connection, connection_id)
    helpdesk = open_helpdesk(connection)
    # Tickets are decided a page at a time: the page's announced tickets are gathered
    # as they arrive, then decided and recorded together (one commit).
    batch: list[Ticket] = []
    announced: set[str] = set()

    def decide(tickets: list[Ticket]) -> None:
        entries = [known.prepare(ticket) for ticket in tickets]
        checks = RequesterChecks(
            [ticket.requester_email for ticket, _ in entries if ticket.requester_email],
            cooldowns,
            now,
            planned=planned if dry_run else None,
        )
        rows: list[tuple[Survey, Ticket, str | None]] = []
        for ticket, done in entries:
            for survey, settings, window in plans:
                if not _holds(window, ticket):
                    continue
                report = reports[survey.id]
                report.seen += 1
                if survey.id in done:
                    report.already += 1
                    if on_decision:
                        on_decision(survey.id, ticket, ALREADY_SURVEYED)
                    continue
                reason = skip_reason(ticket, survey.id, settings, now, checks)
                if on_decision:
                    on_decision(survey.id, ticket, reason)
                if reason:
                    report.skipped[reason] = report.skipped.get(reason, 0) + 1
                else:
                    report.pending += 1
                    checks.plan(survey.id, ticket.requester_email)
                rows.append((survey, ticket, reason))
        if dry_run or not rows:
            return
        recorded = _record_all([(*row, ticket_link(helpdesk, row[1])) for row in rows])
        for survey, ticket, reason in rows:
            delivery_id = recorded.get((survey.id, ticket.id))
            if delivery_id is None:
                reports[survey.id].already += 1  # an overlapping scan recorded it first
            elif not reason:
                created.append(delivery_id)

    def flush() -> None:
        nonlocal batch, created
        if batch:
            tickets, batch = batch, []
            decide(tickets)
        if len(created) >= SEND_BATCH:
            # Sends start while the scan goes on, in full batches.
            enqueue_sends(created)
            created = []

    class Wants:
        """Asked by the connector before each requester look-up; told of each page."""

        def __call__(self, ticket: Ticket) -> bool:
            """Whether some survey still has to decide `ticket` on its requester's address."""
            ticket, done = known.prepare(ticket)
            known.keep(ticket, done)
            return any(
                survey.id not in done
                and _holds(window, ticket)
                and ticket_reason(ticket, settings, now) is None
                for survey, settings, window in plans
            )

        def page(self, tickets: list[Ticket]) -> None:
            flush()  # the previous page is complete
            known.read([ticket.id for ticket in tickets])
            announced.clear()
            announced.update(ticket.id for ticket in tickets)

    bind_log(connection_id=connection_id, **({"survey_id": ids[0]} if len(ids) == 1 else {}))
    seen, started = 0, time.monotonic()
    next_note = started + PROGRESS_SECONDS
    next_renewal = started + LOCK_RENEW_SECONDS
    for ticket in helpdesk.scan(widest([plan[2] for plan in plans]), wants=Wants()):
        seen += 1
        moment = time.monotonic()
        if lock and moment >= next_renewal:
            next_renewal = moment + LOCK_RENEW_SECONDS
            _renew(lock)
        if seen % PROGRESS_EVERY == 0 or moment >= next_note:
            next_note = moment + PROGRESS_SECONDS
            log.info(
                "Scan of connection %s: %s tickets so far (%.0f s)",
                connection_id,
                seen,
                moment - started,
            )
        batch.append(ticket)
        announced.discard(ticket.id)
        if not announced or len(batch) >= MAX_BATCH:
            flush()
    flush()
    if dry_run:
        return reports
    for survey, _settings, window in plans:
        db.session.refresh(survey)
        if survey.watermark is None or window.resolved_before > survey.watermark:
            survey.watermark = window.resolved_before  # never backwards
        survey.last_scan_at = now
        survey.last_scan_error = ""
    db.session.commit()
    elapsed = time.monotonic() - started
    if seen >= PROGRESS_EVERY or elapsed >= PROGRESS_SECONDS:
        log.info("Scan of connection %s done: %s tickets in %.0f s", connection_id, seen, elapsed)
    enqueue_sends(created)
    return reports


def ticket_link(helpdesk: Helpdesk, ticket: Ticket) -> str | None:
    """The connector's link to the ticket's page (web addresses only: it becomes a link
    on pages); a plugin's bug costs the link only."""
    try:
        link = helpdesk.ticket_link(ticket)
    except Exception:  # noqa: BLE001  (any plugin error: record the delivery anyway)
        log.warning("The helpdesk plugin could not link ticket %s.", ticket.id, exc_info=True)
        return None
    return link if isinstance(link, str) and link.startswith(("https://", "http://")) else None


def _record_all(
    decisions: list[tuple[Survey, Ticket, str | None, str | None]],
) -> dict[tuple[int, str], int]:
    """Commit a batch of decisions as `Delivery` rows, in one statement and one commit;
    return the new rows' ids by (survey id, ticket id), leaving out tickets that had
    one already (an overlapping scan recorded it first)."""
    rows = [_row(*decision) for decision in decisions]
    dialect = db.session.get_bind().dialect.name
    if dialect not in _INSERTS:  # a database without ON CONFLICT: one row at a time
        return {key: delivery_id for key, delivery_id in map(_record_one, rows) if delivery_id}
    statement = (
        _INSERTS[dialect](Delivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["survey_id", "ticket_id"])
        .returning(Delivery.id, Delivery.survey_id, Delivery.ticket_id)
    )
    # Committed before the next helpdesk call: the next batch's cooldown sees these,
    # an interrupted scan keeps its progress, and SQLite's write lock is never held
    # across helpdesk calls.
    recorded = {(s, t): i for i, s, t in db.session.execute(statement)}
    db.session.commit()
    return recorded


def _record_one(row: dict[str, Any]) -> tuple[tuple[int, str], int | None]:
    db.session.add(Delivery(**row))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return (row["survey_id"], row["ticket_id"]), None
    delivery_id = db.session.execute(
        select(Delivery.id).where(
            Delivery.survey_id == row["survey_id"], Delivery.ticket_id == row["ticket_id"]
        )
    ).scalar()
    return (row["survey_id"], row["ticket_id"]), delivery_id


def _row(survey: Survey, ticket: Ticket, reason: str | None, link: str | None) -> dict[str, Any]:
    """One decision as a `Delivery` row's values."""
    # An unsubscribed (or erased) person's address and name are not kept: the
    # suppression list holds only a hash of it, and the log needs no more.
    unsubscribed = reason == UNSUBSCRIBED
    now = utcnow()
    return {
        "survey_id": survey.id,
        "ticket_id": ticket.id,
        # The normal form; an invalid address is kept as given, for the deliveries log.
        "requester_email": None
        if unsubscribed
        else email_key(ticket.requester_email or "") or None,
        "requester_name": "" if unsubscribed else ticket.requester_name,
        "locale": ticket.requester_locale,
        "agent_ref": ticket.assignee_id,
        "resolved_at": ticket.resolved_at,
        "ticket_updated_at": ticket.updated_at,
        "state": DeliveryState.SKIPPED.value if reason else DeliveryState.PENDING.value,
        "skip_reason": reason,
        "ticket_url": (link or "")[:500] or None,
        "created_at": now,
        "updated_at": now,
    }


def _lock(key: str) -> bool:
    try:
        return bool(redis_connection().set(key, 1, nx=True, ex=SCAN_LOCK_SECONDS))
    except RedisError:
        return True  # without Redis the unique (survey, ticket) rows still prevent duplicates


def _renew(key: str) -> None:
    with contextlib.suppress(RedisError):
        redis_connection().expire(key, SCAN_LOCK_SECONDS)


def _unlock(key: str) -> None:
    with contextlib.suppress(RedisError):
        redis_connection().delete(key)
