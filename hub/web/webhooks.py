"""The Webhooks pages (admins): subscriptions, their secret shown once, the delivery log."""

from __future__ import annotations

from flask import Blueprint
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from sqlalchemy import select

from hub.extensions import db
from hub.models import Survey
from hub.web.access import admin_required
from hub.webhooks.events import EVENT_TYPES
from hub.webhooks.models import WebhookAttempt
from hub.webhooks.models import WebhookSubscription
from hub.webhooks.subscriptions import FORMATS
from hub.webhooks.subscriptions import InvalidSubscription
from hub.webhooks.subscriptions import SubscriptionInput
from hub.webhooks.subscriptions import create_subscription
from hub.webhooks.subscriptions import delete_subscription
from hub.webhooks.subscriptions import disable
from hub.webhooks.subscriptions import enable
from hub.webhooks.subscriptions import groups_by_metric
from hub.webhooks.subscriptions import send_test

bp = Blueprint("webhooks", __name__)

#: Attempts the log page shows, newest first.
LOG_LIMIT = 200
_ID = "<int(max=2147483647):subscription_id>"


def _subscription(subscription_id: int) -> WebhookSubscription:
    subscription = db.session.get(WebhookSubscription, subscription_id)
    if subscription is None:
        abort(404)
    return subscription


def _surveys() -> list[Survey]:
    return list(db.session.execute(select(Survey).order_by(Survey.name, Survey.id)).scalars())


@bp.get("/webhooks")
@admin_required
def index():
    """Every subscription: where, what, filter, format, state and its last attempt."""
    subscriptions = db.session.execute(
        select(WebhookSubscription).order_by(WebhookSubscription.id)
    ).scalars()
    return render_template("webhooks/index.html", subscriptions=list(subscriptions))


@bp.route("/webhooks/new", methods=["GET", "POST"])
@admin_required
def new():
    """The form; a valid POST creates the subscription and shows its secret this once."""
    given = SubscriptionInput(events=["rating.created"])
    errors: dict[str, str] = {}
    if request.method == "POST":
        form = request.form
        given = SubscriptionInput(
            url=form.get("url", ""),
            events=form.getlist("events"),
            description=form.get("description", ""),
            survey_id=form.get("survey_id") or None,
            metric=form.get("metric") or None,
            score_group=form.get("score_group") or None,
            format=form.get("format", "standard"),
        )
        try:
            subscription, secret = create_subscription(given)
        except InvalidSubscription as exc:
            errors = exc.errors
        else:
            # Not a redirect: the secret must not travel in a URL or a flash message.
            return render_template(
                "webhooks/created.html", subscription=subscription, secret=secret
            )
    return render_template(
        "webhooks/new.html",
        given=given,
        errors=errors,
        event_types=EVENT_TYPES,
        formats=FORMATS,
        surveys=_surveys(),
        groups=groups_by_metric(),
    ), (422 if errors else 200)


@bp.get(f"/webhooks/{_ID}")
@admin_required
def show(subscription_id: int):
    """One subscription and its delivery log: each attempt's time, event, outcome, duration."""
    subscription = _subscription(subscription_id)
    attempts = db.session.execute(
        select(WebhookAttempt)
        .where(WebhookAttempt.subscription_id == subscription.id)
        .order_by(WebhookAttempt.id.desc())
        .limit(LOG_LIMIT)
    ).scalars()
    return render_template(
        "webhooks/show.html", subscription=subscription, attempts=list(attempts), limit=LOG_LIMIT
    )


@bp.post(f"/webhooks/{_ID}/test")
@admin_required
def test(subscription_id: int):
    """Queue a test event to this subscription."""
    subscription = _subscription(subscription_id)
    if not subscription.active:
        flash("Enable the subscription first; a disabled one receives nothing.", "error")
    else:
        send_test(subscription)
        flash("A test event is on its way; its attempt appears in the log below.", "success")
    return redirect(url_for("webhooks.show", subscription_id=subscription.id))


@bp.post(f"/webhooks/{_ID}/disable")
@admin_required
def disable_view(subscription_id: int):
    subscription = _subscription(subscription_id)
    if subscription.active:
        disable(subscription)
    flash("The subscription is disabled: no events are sent to it.", "success")
    return redirect(url_for("webhooks.show", subscription_id=subscription.id))


@bp.post(f"/webhooks/{_ID}/enable")
@admin_required
def enable_view(subscription_id: int):
    subscription = _subscription(subscription_id)
    enable(subscription)
    flash("The subscription is enabled: new events are sent to it.", "success")
    return redirect(url_for("webhooks.show", subscription_id=subscription.id))


@bp.post(f"/webhooks/{_ID}/delete")
@admin_required
def delete_view(subscription_id: int):
    subscription = _subscription(subscription_id)
    url = subscription.url
    delete_subscription(subscription)
    flash(f"The subscription to {url} is deleted, with its log.", "success")
    return redirect(url_for("webhooks.index"))
