"""The customer's pages: one-click rating, comment, thank-you and unsubscribe."""

from __future__ import annotations

import contextlib

from flask import Blueprint
from flask import current_app
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from marshmallow import ValidationError
from sqlalchemy import update

from hub.contracts import Metric
from hub.extensions import csrf
from hub.extensions import db
from hub.i18n import survey_language
from hub.links import LinkExpired
from hub.links import LinkInvalid
from hub.links import check_not_expired
from hub.links import read_rating_token
from hub.links import read_unsubscribe_token
from hub.models import Delivery
from hub.models import utcnow
from hub.ratings import MAX_COMMENT_LENGTH
from hub.ratings import RatingLocked
from hub.ratings import rating_for
from hub.ratings import record_comment
from hub.ratings import record_score
from hub.suppressions import is_suppressed
from hub.suppressions import suppress
from hub.surveys import MetricMissing
from hub.surveys import effective_settings
from hub.surveys import metric_of
from hub.surveys import settings_of
from hub.surveys import text_color_on

bp = Blueprint("public", __name__)
# The signed token in the URL is the customer's credential; a CSRF cookie would only
# make answers fail for people whose mail app blocks cookies, and the one-click
# unsubscribe POST comes from mail providers, which never have one.
csrf.exempt(bp)


class PublicPageError(Exception):
    """A link that cannot be used; rendered as a friendly page with a 4xx status."""

    def __init__(self, template: str, status: int) -> None:
        super().__init__(template)
        self.template = template
        self.status = status


@bp.after_request
def private_page(response):
    # The URL is the customer's credential: keep it out of caches, other sites' Referer
    # headers and other sites' frames.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response  # frames: the app-wide CSP (hub.web.security) refuses them


@bp.errorhandler(PublicPageError)
def public_page_error(error: PublicPageError):
    return render_template(error.template), error.status


def _dress(delivery: Delivery, settings: dict) -> None:
    """Show the page in the customer's language and the survey's brand."""
    g.locale = survey_language(settings["language"], delivery.locale)
    g.brand_color = settings["brand_color"]
    g.brand_text = text_color_on(settings["brand_color"])
    g.company = settings["company_name"]


def _load(token: str) -> tuple[Delivery, Metric, dict]:
    """The delivery behind a score link, its metric and settings; sets the page language."""
    try:
        delivery_id, issued_at = read_rating_token(token)
    except LinkInvalid:
        raise PublicPageError("public/link_invalid.html", 404) from None
    delivery = db.session.get(Delivery, delivery_id)
    if delivery is None:
        raise PublicPageError("public/link_invalid.html", 404)
    try:
        metric = metric_of(delivery.survey)
    except MetricMissing:
        current_app.logger.error("Survey %s: metric plugin missing", delivery.survey_id)
        raise PublicPageError("public/unavailable.html", 503) from None
    try:
        settings = effective_settings(metric, delivery.survey.settings or {})
    except ValidationError as exc:
        current_app.logger.error("Survey %s has invalid settings: %s", delivery.survey_id, exc)
        raise PublicPageError("public/unavailable.html", 503) from None
    _dress(delivery, settings)
    try:
        check_not_expired(issued_at, settings["link_expiry_days"], utcnow())
    except LinkExpired:
        raise PublicPageError("public/link_expired.html", 410) from None
    return delivery, metric, settings


def _opened(delivery: Delivery) -> None:
    """Note the first time the rating page was opened (the funnel's "opened" step).

    A mail scanner's prefetch counts too, as any email "open" does; a rating always
    counts as opened, so the funnel never narrows backwards.
    """
    if delivery.opened_at is None:
        db.session.execute(
            update(Delivery)
            .where(Delivery.id == delivery.id, Delivery.opened_at.is_(None))
            .values(opened_at=utcnow())
        )
        db.session.commit()


def _point(metric: Metric, delivery: Delivery, score: int):
    scale = delivery.survey.scale
    if not metric.check(score, scale):
        raise PublicPageError("public/score_invalid.html", 400)
    return next(p for p in metric.points(scale) if p.value == score)


@bp.get("/r/<token>/<int(signed=True):score>")
def rate(token: str, score: int):
    """Confirm a score. A GET records nothing: mail scanners prefetch links."""
    delivery, metric, settings = _load(token)
    point = _point(metric, delivery, score)
    _opened(delivery)
    return render_template(
        "public/rate.html", point=point, metric=metric, scale=delivery.survey.scale
    )


@bp.post("/r/<token>/<int(signed=True):score>")
def record(token: str, score: int):
    """Record the score (the rating page submits this itself), then ask for a comment."""
    delivery, metric, settings = _load(token)
    _point(metric, delivery, score)
    _opened(delivery)
    try:
        record_score(
            delivery, score, delivery.survey.scale, automatic=request.form.get("auto") == "1"
        )
    except RatingLocked as locked:
        top = metric.highest(delivery.survey.scale)
        return render_template("public/already.html", rating=locked.rating, top=top), 409
    return redirect(url_for("public.comment", token=token), code=303)


@bp.route("/r/<token>/comment", methods=["GET", "POST"])
def comment(token: str):
    """Offer (and save) an optional comment once a score is recorded."""
    delivery, metric, settings = _load(token)
    rating = rating_for(delivery)
    if rating is None:
        _opened(delivery)
        return render_template(
            "public/choose.html",
            token=token,
            metric=metric,
            points=metric.points(delivery.survey.scale),
        )
    if request.method == "POST":
        record_comment(rating, request.form.get("comment", ""))
        return redirect(url_for("public.thanks", token=token), code=303)
    top = metric.highest(delivery.survey.scale)
    return render_template(
        "public/comment.html", rating=rating, top=top, max_length=MAX_COMMENT_LENGTH
    )


@bp.get("/r/<token>/thanks")
def thanks(token: str):
    """The thank-you page."""
    delivery, metric, settings = _load(token)
    if rating_for(delivery) is None:
        return redirect(url_for("public.comment", token=token))
    return render_template("public/thanks.html")


@bp.route("/u/<token>", methods=["GET", "POST"])
def unsubscribe(token: str):
    """Unsubscribe page (GET asks, POST confirms); also the RFC 8058 one-click target."""
    try:
        delivery = db.session.get(Delivery, read_unsubscribe_token(token))
    except LinkInvalid:
        delivery = None
    if delivery is None or not delivery.requester_email:
        raise PublicPageError("public/link_invalid.html", 404)
    # Unsubscribing must work even when the survey's plugin or settings are broken.
    with contextlib.suppress(MetricMissing, ValidationError):
        _dress(delivery, settings_of(delivery.survey))
    if request.method == "POST":
        suppress(delivery.requester_email, "unsubscribed")
        return render_template("public/unsubscribed.html")
    if is_suppressed(delivery.requester_email):
        return render_template("public/unsubscribed.html")
    return render_template("public/unsubscribe.html", email=delivery.requester_email)
