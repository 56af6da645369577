"""Eligibility: whether a ticket gets a survey, or the reason it is skipped."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from hub.addresses import email_key
from hub.addresses import normalise_email
from hub.extensions import db
from hub.helpdesk import Ticket
from hub.models import Delivery
from hub.models import DeliveryState
from hub.suppressions import suppressed_among

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
#: Addresses per `IN (...)` list: well under every database's parameter limit.
_IN_CHUNK = 500


def recent_deliveries(
    survey_id: int, keys: Iterable[str], days: int, now: datetime
) -> dict[str, set[int]]:
    """The deliveries of this survey that count for a `days`-day cooldown, by address
    (`email_key` form), among `keys`: one query for a batch of decisions."""
    wanted = sorted(set(keys))
    found: dict[str, set[int]] = {}
    if days <= 0 or not wanted:
        return found
    for start in range(0, len(wanted), _IN_CHUNK):
        rows = db.session.execute(
            select(Delivery.id, Delivery.requester_email).where(
                Delivery.survey_id == survey_id,
                Delivery.requester_email.in_(wanted[start : start + _IN_CHUNK]),
                Delivery.state.in_(_COUNTED),
                Delivery.created_at >= now - timedelta(days=days),
            )
        )
        for delivery_id, email in rows:
            found.setdefault(email, set()).add(delivery_id)
    return found


class RequesterChecks:
    """The requester checks (an address, a valid one, not unsubscribed, not in the
    cooldown) for a batch of decisions: the suppression list and each survey's recent
    deliveries are read once for the batch's addresses, not once per ticket.

    Decisions are made in order: an address given a survey earlier in the batch counts
    for the cooldown of later ones (`plan`: the scan records nothing until the batch
    ends), and a delivery skipped in the batch stops counting (`drop`).
    """

    def __init__(
        self,
        addresses: Iterable[str | None],
        cooldowns: dict[int, int],
        now: datetime,
        planned: dict[int, set[str]] | None = None,
    ) -> None:
        keys = {email_key(a) for a in (normalise_email(x) for x in addresses) if a}
        self.suppressed = suppressed_among(keys)
        self.recent = {
            survey_id: recent_deliveries(survey_id, keys, days, now)
            for survey_id, days in cooldowns.items()
            if days > 0
        }
        # A dry run, which records nothing, carries its plans from batch to batch.
        self.planned: dict[int, set[str]] = {} if planned is None else planned
        self.dropped: set[int] = set()

    def reason(
        self,
        ticket: Ticket,
        survey_id: int,
        settings: dict[str, Any],
        delivery_id: int | None = None,
    ) -> str | None:
        """The requester's reason to skip `ticket`, or None; a None for a ticket the
        caller then surveys must be followed by `plan` (the scan) so later tickets of
        the batch see it."""
        if not (ticket.requester_email or "").strip():
            return NO_EMAIL
        email = normalise_email(ticket.requester_email)
        if email is None:
            return INVALID_EMAIL
        key = email_key(email)
        if key in self.suppressed:
            return UNSUBSCRIBED
        if settings["cooldown_days"] > 0:
            if key in self.planned.get(survey_id, ()):
                return COOLDOWN
            others = self.recent.get(survey_id, {}).get(key, set()) - self.dropped
            if others - {delivery_id}:
                return COOLDOWN
        return None

    def plan(self, survey_id: int, address: str | None) -> None:
        """`address` gets this survey in the batch (not yet in the database)."""
        email = normalise_email(address)
        if email:
            self.planned.setdefault(survey_id, set()).add(email_key(email))

    def drop(self, delivery_id: int) -> None:
        """This delivery was skipped in the batch: it no longer counts for the cooldown."""
        self.dropped.add(delivery_id)


def skip_reason(
    ticket: Ticket,
    survey_id: int,
    settings: dict[str, Any],
    now: datetime,
    checks: RequesterChecks,
    delivery_id: int | None = None,
) -> str | None:
    """The reason `ticket` must not be surveyed now, or None when it gets a survey.

    Used when the scan decides and again right before sending (`delivery_id` is then the
    ticket's own delivery, which the cooldown must not count). `checks` holds what the
    batch's requester checks read. The ticket's update time must already discount the
    hub's own writes (`own_writes`).
    """
    return ticket_reason(ticket, settings, now) or checks.reason(
        ticket, survey_id, settings, delivery_id
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
