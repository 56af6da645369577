"""Activating and deactivating a survey's trigger."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import update

from hub.connections import TROUBLE
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
    try:
        prepare_attribute(survey, settings_of(survey)["attribute_name"])
    except HelpdeskError as exc:
        raise ActivationFailed(f"The helpdesk could not be prepared: {exc}") from exc
    now = utcnow()
    survey.resolved_since = survey.watermark = now - timedelta(days=lookback_days)
    survey.activated_at = now
    survey.active = True
    survey.last_scan_error = ""
    db.session.commit()
    enqueue_scan(survey.connection_id)  # the first scan now, not at the scheduler's next tick


def prepare_attribute(survey: Survey, attribute_name: str) -> None:
    """Define the score attribute in the survey's helpdesk (idempotent; raises the
    helpdesk's errors)."""
    metric = metric_of(survey)
    open_helpdesk(survey.connection).prepare(attribute_name, f"{metric.title} score (SurveyHub)")


def attribute_change_errors(survey: Survey, new_settings: dict[str, Any]) -> dict[str, list[str]]:
    """An active survey that writes to another attribute from now on: define it in the
    helpdesk first (as activation does); the reason it cannot be, keyed by the field."""
    new = new_settings.get("attribute_name")
    try:
        old = settings_of(survey)["attribute_name"]
    except ValidationError:
        old = None
    if not survey.active or not new or new == old:
        return {}
    try:
        prepare_attribute(survey, new)
    except TROUBLE as exc:
        return {"attribute_name": [f"The helpdesk could not define this attribute: {exc}"]}
    return {}


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
