"""Creating, checking and changing webhook subscriptions (for the pages and the API)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from flask import current_app
from sqlalchemy import delete
from sqlalchemy import select
from sqlalchemy import update

from hub.extensions import db
from hub.models import Survey
from hub.models import utcnow
from hub.urls import UnsafeUrl
from hub.urls import check_url
from hub.webhooks.events import EVENT_TYPES
from hub.webhooks.events import TEST_EVENT
from hub.webhooks.events import record_event
from hub.webhooks.models import MessageState
from hub.webhooks.models import WebhookAttempt
from hub.webhooks.models import WebhookEvent
from hub.webhooks.models import WebhookMessage
from hub.webhooks.models import WebhookSubscription
from hub.webhooks.signing import new_secret

FORMATS = {"standard": "Standard Webhooks JSON", "slack": "Slack incoming webhook"}
MAX_DESCRIPTION = 200


class InvalidSubscription(ValueError):
    """What is wrong with a subscription's fields, one message per field."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(errors.values()))
        self.errors = errors


@dataclass
class SubscriptionInput:
    """A subscription's fields as given (form or API), before they are checked."""

    url: str = ""
    events: list[str] = field(default_factory=list)
    description: str = ""
    survey_id: Any = None
    metric: str | None = None
    score_group: str | None = None
    format: str = "standard"


def groups_by_metric() -> dict[str, tuple[str, ...]]:
    """The score groups each installed metric has (NPS: detractor, passive, promoter)."""
    metrics = current_app.extensions["hub"].registry.metrics
    return {key: tuple(metric.groups) for key, metric in metrics.items()}


def _one_line(text: str | None) -> str:
    return "".join(ch for ch in (text or "") if ch.isprintable()).strip()


def check(given: SubscriptionInput) -> dict[str, Any]:
    """The checked fields, or `InvalidSubscription`; the URL passes the address guard."""
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    try:
        values["url"] = check_url(given.url, current_app.config["HUB_ALLOWED_HELPDESK_URLS"])
    except UnsafeUrl as exc:
        errors["url"] = str(exc)
    events = [event for event in dict.fromkeys(given.events or []) if isinstance(event, str)]
    unknown = [event for event in events if event not in EVENT_TYPES]
    if unknown or not events:
        errors["events"] = f"Choose one or more events: {', '.join(EVENT_TYPES)}."
    values["events"] = [event for event in EVENT_TYPES if event in events]
    description = _one_line(given.description)
    if len(description) > MAX_DESCRIPTION:
        errors["description"] = f"Keep the description under {MAX_DESCRIPTION} characters."
    values["description"] = description
    survey = None
    raw_survey = given.survey_id
    if raw_survey not in (None, ""):
        text = str(raw_survey).strip()
        if text.isascii() and text.isdigit() and len(text) <= 9:
            survey = db.session.get(Survey, int(text))
        if survey is None:
            errors["survey_id"] = "There is no such survey; choose one from the list."
    values["survey_id"] = survey.id if survey else None
    groups = groups_by_metric()
    metric = _one_line(given.metric) or None
    if metric is not None and metric not in groups:
        errors["metric"] = f"Choose a metric: {', '.join(groups)}."
        metric = None
    if survey is not None:
        if metric is not None and metric != survey.metric:
            errors["metric"] = "The survey measures another metric; leave the metric empty."
        metric = survey.metric
    values["metric"] = metric
    group = _one_line(given.score_group) or None
    if group is not None:
        if metric is None:
            errors["score_group"] = "A score group needs a metric (or a survey) to belong to."
        elif group not in groups.get(metric, ()):
            names = ", ".join(groups.get(metric, ()))
            errors["score_group"] = f"The groups of {metric.upper()} are: {names}."
    values["score_group"] = group
    if given.format not in FORMATS:
        errors["format"] = f"Choose a format: {', '.join(FORMATS)}."
    values["format"] = given.format
    if errors:
        raise InvalidSubscription(errors)
    return values


def create_subscription(given: SubscriptionInput) -> tuple[WebhookSubscription, str]:
    """A new active subscription and its signing secret (shown only now, kept encrypted)."""
    values = check(given)
    secret = new_secret()
    subscription = WebhookSubscription(**values)
    subscription.set_secret(secret)
    db.session.add(subscription)
    db.session.commit()
    return subscription, secret


def disable(subscription: WebhookSubscription, reason: str = "Disabled by an admin.") -> None:
    """Stop sending to it; messages still waiting for it are not sent."""
    now = utcnow()
    subscription.active = False
    subscription.disabled_at = now
    subscription.disabled_reason = reason
    db.session.execute(
        update(WebhookMessage)
        .where(
            WebhookMessage.subscription_id == subscription.id,
            WebhookMessage.state == MessageState.PENDING.value,
        )
        .values(state=MessageState.FAILED.value, last_error=reason, updated_at=now)
    )
    db.session.commit()


def enable(subscription: WebhookSubscription) -> None:
    """Send to it again, from the next event on, with a clean failure record."""
    subscription.active = True
    subscription.disabled_at = None
    subscription.disabled_reason = ""
    subscription.failing_since = None
    db.session.commit()


def delete_subscription(subscription: WebhookSubscription) -> None:
    """Remove it with its messages and log; events no one else waits for go too."""
    event_ids = select(WebhookMessage.event_id).where(
        WebhookMessage.subscription_id == subscription.id
    )
    orphans = list(db.session.execute(event_ids).scalars())
    db.session.execute(
        delete(WebhookAttempt).where(WebhookAttempt.subscription_id == subscription.id)
    )
    db.session.execute(
        delete(WebhookMessage).where(WebhookMessage.subscription_id == subscription.id)
    )
    if orphans:
        still_wanted = select(WebhookMessage.event_id).where(WebhookMessage.event_id.in_(orphans))
        db.session.execute(
            delete(WebhookEvent).where(
                WebhookEvent.id.in_(orphans), WebhookEvent.id.not_in(still_wanted)
            )
        )
    db.session.delete(subscription)
    db.session.commit()


def send_test(subscription: WebhookSubscription) -> WebhookEvent:
    """Queue a `webhook.test` event to this subscription only (its log shows the result)."""
    event = record_event(TEST_EVENT, {"subscription_id": subscription.id}, only=subscription)
    db.session.commit()
    return event
