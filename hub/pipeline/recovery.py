"""The periodic jobs that keep the pipeline moving: scanning and the reconciler.

The reconciler re-derives outstanding work from the database alone, so a restarted or
flushed Redis, or a killed worker, loses nothing: pending deliveries and write-backs are
enqueued again, and rows stuck in `sending` become `unknown` (never resent by
themselves, since the email may have gone out).
"""

from __future__ import annotations

import logging
from datetime import datetime
from datetime import timedelta

from flask import current_app
from sqlalchemy import or_
from sqlalchemy import select
from sqlalchemy import update

from hub.erasure import enqueue_due_erasures
from hub.extensions import db
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Survey
from hub.models import WriteBack
from hub.models import WriteBackState
from hub.models import utcnow
from hub.pipeline.scan import enqueue_scan
from hub.pipeline.send import enqueue_sends
from hub.pipeline.writeback import enqueue_write_back
from hub.pipeline.writeback import release
from hub.webhooks.sender import reconcile_webhooks

log = logging.getLogger(__name__)

BATCH = 500


def scan_active_surveys() -> int:
    """Enqueue one scan per connection with active surveys; return how many were enqueued."""
    ids = db.session.execute(
        select(Survey.connection_id).where(Survey.active.is_(True)).distinct()
    ).scalars()
    return sum(enqueue_scan(connection_id) for connection_id in ids)


def enqueue_due_scans(now: datetime | None = None) -> int:
    """Start the scans webhooks asked for (`Survey.scan_due_at`) once they are due; the
    active scheduler calls this every tick, the reconciler as a backstop."""
    now = now or utcnow()
    due_scans = (
        db.session.execute(select(Survey).where(Survey.active.is_(True), Survey.scan_due_at <= now))
        .scalars()
        .all()
    )
    if not due_scans:
        return 0
    for survey in due_scans:
        survey.scan_due_at = None
    db.session.commit()
    return sum(
        enqueue_scan(connection_id) for connection_id in {s.connection_id for s in due_scans}
    )


def reconcile() -> dict[str, int]:
    """Repair and re-enqueue outstanding work from the database; return what it did."""
    now = utcnow()
    timeout = timedelta(seconds=current_app.config["HUB_SENDING_TIMEOUT"])
    done: dict[str, int] = {}

    stuck = db.session.execute(
        update(Delivery)
        .where(Delivery.state == DeliveryState.SENDING.value, Delivery.updated_at < now - timeout)
        .values(
            state=DeliveryState.UNKNOWN.value,
            error="Sending was interrupted; the email may or may not have been delivered, "
            "so it is not sent again automatically.",
            updated_at=now,
        )
    )
    db.session.commit()
    stuck_write_backs = db.session.execute(
        select(WriteBack.id)
        .where(
            WriteBack.state == WriteBackState.RUNNING.value, WriteBack.updated_at < now - timeout
        )
        .limit(BATCH)
    ).scalars()
    # One by one: a rating may have a newer pending write-back, and then this one is
    # superseded instead (one pending per rating), without stopping the others.
    released = sum(release(write_back_id) == "pending" for write_back_id in stuck_write_backs.all())
    done["sending_to_unknown"] = stuck.rowcount
    done["write_backs_released"] = released

    due_deliveries = db.session.execute(
        select(Delivery.id)
        .join(Survey, Survey.id == Delivery.survey_id)
        .where(
            Survey.active.is_(True),
            Delivery.state == DeliveryState.PENDING.value,
            or_(Delivery.next_attempt_at.is_(None), Delivery.next_attempt_at <= now),
        )
        .limit(BATCH)
    ).scalars()
    done["sends"] = enqueue_sends(due_deliveries)
    due_write_backs = db.session.execute(
        select(WriteBack.id)
        .where(
            WriteBack.state == WriteBackState.PENDING.value,
            or_(WriteBack.next_attempt_at.is_(None), WriteBack.next_attempt_at <= now),
        )
        .limit(BATCH)
    ).scalars()
    done["write_backs"] = sum(enqueue_write_back(wb_id) for wb_id in due_write_backs)
    done["scans"] = enqueue_due_scans(now)
    done["erasures"] = enqueue_due_erasures(now)
    done.update(reconcile_webhooks(now))
    if any(done.values()):
        log.info("Reconciled: %s", done)
    return done
