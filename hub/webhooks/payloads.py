"""The JSON body of an event, built when it is sent.

The event row keeps the facts of the moment (which rating, the score given); names,
addresses, the comment and links are read from the current rows, so nothing personal is
copied into the outbox and an erased rating is never sent. Shape (Standard Webhooks'
convention): `{"type": ..., "timestamp": ..., "data": {...}}`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from sqlalchemy import select

from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from hub.models import User
from hub.webhooks.events import RATING_CREATED
from hub.webhooks.events import RATING_UPDATED
from hub.webhooks.events import TEST_EVENT
from hub.webhooks.models import WebhookEvent


class Gone(Exception):
    """What the event is about no longer exists (or must not be sent); the message says
    why, for the delivery log."""


def iso(moment: datetime | None) -> str | None:
    """A stored time as RFC 3339 UTC text."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _agent(survey: Survey, agent_ref: str | None) -> dict[str, Any] | None:
    if not agent_ref:
        return None
    user = db.session.execute(
        select(User).where(
            User.helpdesk_user_id == agent_ref, User.connection_id == survey.connection_id
        )
    ).scalar()
    return {"id": agent_ref, "name": user.name if user else None}


def _delivery_part(delivery: Delivery) -> dict[str, Any]:
    survey = delivery.survey
    base = current_app.config.get("HUB_BASE_URL", "").rstrip("/")
    return {
        "survey": {"id": survey.id, "name": survey.name, "metric": survey.metric},
        "delivery": {
            "id": delivery.id,
            "state": delivery.state,
            "sent_at": iso(delivery.sent_at),
            "resolved_at": iso(delivery.resolved_at),
        },
        "ticket": {
            "id": delivery.ticket_id,
            "helpdesk": survey.connection.helpdesk,
            "url": delivery.ticket_url,
        },
        "agent": _agent(survey, delivery.agent_ref),
        "customer": {"email": delivery.requester_email, "name": delivery.requester_name},
        "links": {"deliveries": f"{base}/deliveries?survey={survey.id}" if base else None},
    }


def _rating_data(event: WebhookEvent) -> dict[str, Any]:
    facts = event.data
    rating = db.session.get(Rating, facts.get("rating_id"))
    if rating is None:
        raise Gone("The rating no longer exists (it was erased); nothing was sent.")
    if rating.suspected_scanner and event.type in (RATING_CREATED, RATING_UPDATED):
        raise Gone(
            "Not sent: the score looks like a mail scanner's clicks; the person's own "
            "click sends a new event."
        )
    data = _delivery_part(rating.delivery)
    data["rating"] = {
        "id": rating.id,
        # The score this event reports; a later change sends rating.updated.
        "value": facts.get("value", rating.value),
        "scale": facts.get("scale", rating.scale),
        "group": facts.get("group"),
        "comment": rating.comment or "",
        "created_at": iso(rating.created_at),
        "commented_at": iso(rating.commented_at),
    }
    if "write_back_id" in facts:
        data["write_back"] = {
            "id": facts["write_back_id"],
            "kind": facts.get("kind"),
            "error": facts.get("error", ""),
        }
    return data


def event_body(event: WebhookEvent) -> dict[str, Any]:
    """The event as its subscribers receive it (raises `Gone`)."""
    if event.type == TEST_EVENT:
        data: dict[str, Any] = {"message": "A test event from SurveyHub: the signature checks out."}
    elif "rating_id" in event.data:
        data = _rating_data(event)
    else:
        delivery = db.session.get(Delivery, event.data.get("delivery_id"))
        if delivery is None:
            raise Gone("The delivery no longer exists (it was erased); nothing was sent.")
        data = _delivery_part(delivery)
    return {"type": event.type, "timestamp": iso(event.created_at), "data": data}
