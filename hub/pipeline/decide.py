"""Eligibility: whether a ticket gets a survey, or the reason it is skipped."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy import select

from hub.addresses import email_key
from hub.addresses import normalise_email
from hub.extensions import db
from hub.helpdesk import Ticket
from hub.models import Delivery
from hub.models import DeliveryState
from hub.suppressions import is_suppressed

STARTED_BY_AGENT = "started by an agent"
WRONG_CHANNEL = "wrong channel"
NOT_RESOLVED = "not resolved"
UPDATED = "updated within the delay"
EXCLUDED_TAG = "excluded tag"
NO_EMAIL = "no email"
INVALID_EMAIL = "invalid email"
UNSUBSCRIBED = "unsubscribed"
COOLDOWN = "cooldown"
NO_ASSIGNEE = "no human assignee"
HELPDESK_SURVEYED = "surveyed by the helpdesk"
TICKET_GONE = "ticket deleted"
ALREADY_SURVEYED = "already surveyed"

#: Every reason, in the order checks run, with the sentence the deliveries log shows.
REASONS = {
    STARTED_BY_AGENT: "An agent started the conversation (outbound); the customer did not "
    "write in.",
    WRONG_CHANNEL: "The ticket was not created through a channel the survey covers.",
    NOT_RESOLVED: "The ticket is not resolved any more (reopened).",
    UPDATED: "The ticket was updated after it was resolved, within the delay.",
    EXCLUDED_TAG: "The ticket has an excluded tag.",
    NO_ASSIGNEE: "No human agent was assigned.",
    HELPDESK_SURVEYED: "The helpdesk's own satisfaction survey was already sent for this ticket.",
    NO_EMAIL: "The requester has no email address.",
    INVALID_EMAIL: "The requester's email address is not valid.",
    UNSUBSCRIBED: "The requester unsubscribed.",
    COOLDOWN: "The requester was surveyed recently (cooldown).",
    TICKET_GONE: "The ticket no longer exists in the helpdesk.",
    ALREADY_SURVEYED: "This ticket already has a delivery in this survey.",
}
#: Deliveries that count for the cooldown: sent, or about to be.
_COUNTED = (
    DeliveryState.PENDING.value,
    DeliveryState.SENDING.value,
    DeliveryState.SENT.value,
    DeliveryState.UNKNOWN.value,
)


def in_cooldown(survey_id: int, email: str, days: int, now: datetime, exclude: int | None) -> bool:
    """Whether `email` had a delivery of this survey within the last `days` days."""
    if days <= 0:
        return False
    query = select(func.count(Delivery.id)).where(
        Delivery.survey_id == survey_id,
        Delivery.requester_email == email_key(email),
        Delivery.state.in_(_COUNTED),
        Delivery.created_at >= now - timedelta(days=days),
    )
    if exclude is not None:
        query = query.where(Delivery.id != exclude)
    return db.session.execute(query).scalar_one() > 0


def skip_reason(
    ticket: Ticket,
    survey_id: int,
    settings: dict[str, Any],
    now: datetime,
    delivery_id: int | None = None,
    planned: set[str] | None = None,
) -> str | None:
    """The reason `ticket` must not be surveyed now, or None when it gets a survey.

    Used when the scan decides and again right before sending (`delivery_id` is then the
    ticket's own delivery, which the cooldown must not count). A dry run passes the
    emails it would have sent to in `planned`, since it records no deliveries. The
    ticket's update time must already discount the hub's own writes (`own_writes`).
    """
    return ticket_reason(ticket, settings, now) or requester_reason(
        ticket, survey_id, settings, now, delivery_id, planned
    )


def ticket_reason(ticket: Ticket, settings: dict[str, Any], now: datetime) -> str | None:
    """The checks that need no requester address: the scan runs them before it asks the
    helpdesk for the requester, so a ticket skipped anyway costs no look-up."""
    delay = timedelta(hours=settings["delay_hours"])
    if ticket.started_by_agent:
        return STARTED_BY_AGENT
    if ticket.channel not in settings["channels"]:
        return WRONG_CHANNEL
    if ticket.status not in settings["resolved_statuses"]:
        return NOT_RESOLVED
    if ticket.updated_at and ticket.updated_at > now - delay:
        return UPDATED
    if set(ticket.tags) & set(settings["excluded_tags"]):
        return EXCLUDED_TAG
    if settings["require_assignee"] and not ticket.assignee_id:
        return NO_ASSIGNEE
    if settings["skip_helpdesk_surveyed"] and ticket.helpdesk_survey:
        return HELPDESK_SURVEYED
    return None


def requester_reason(
    ticket: Ticket,
    survey_id: int,
    settings: dict[str, Any],
    now: datetime,
    delivery_id: int | None = None,
    planned: set[str] | None = None,
) -> str | None:
    """The checks of the requester's address: present, valid, not unsubscribed, not in
    the cooldown."""
    if not (ticket.requester_email or "").strip():
        return NO_EMAIL
    email = normalise_email(ticket.requester_email)
    if email is None:
        return INVALID_EMAIL
    if is_suppressed(email):
        return UNSUBSCRIBED
    cooldown = settings["cooldown_days"]
    if cooldown > 0 and planned is not None and email in planned:
        return COOLDOWN
    if in_cooldown(survey_id, email, cooldown, now, delivery_id):
        return COOLDOWN
    return None
