"""Activating and deactivating a survey's trigger."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from hub.connections import open_helpdesk
from hub.extensions import db
from hub.helpdesk import HelpdeskError
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Survey
from hub.models import utcnow
from hub.pipeline.scan import enqueue_scan
from hub.surveys import metric_of
from hub.surveys import settings_of


class ActivationFailed(RuntimeError):
    """The helpdesk could not be prepared; the message is the helpdesk's own."""


def activate(survey: Survey, lookback_days: int = 0) -> None:
    """Prepare the helpdesk (define the score attribute), then start scanning.

    Only tickets resolved from now on are surveyed, or from `lookback_days` ago.
    """
    metric = metric_of(survey)
    settings = settings_of(survey)
    try:
        open_helpdesk(survey.connection).prepare(
            settings["attribute_name"], f"{metric.title} score (SurveyHub)"
        )
    except HelpdeskError as exc:
        raise ActivationFailed(f"The helpdesk could not be prepared: {exc}") from exc
    now = utcnow()
    survey.resolved_since = survey.watermark = now - timedelta(days=lookback_days)
    survey.activated_at = now
    survey.active = True
    survey.last_scan_error = ""
    db.session.commit()
    enqueue_scan(survey.connection_id)  # the first scan now, not at the scheduler's next tick


def deactivate(survey: Survey) -> int:
    """Stop scanning and cancel the deliveries not sent yet; return how many."""
    survey.active = False
    cancelled = db.session.execute(
        update(Delivery)
        .where(Delivery.survey_id == survey.id, Delivery.state == DeliveryState.PENDING.value)
        .values(state=DeliveryState.CANCELLED.value, error="The survey was deactivated.")
    )
    db.session.commit()
    return cancelled.rowcount
