"""The customer's pages: one-click rating, comment, thank-you and unsubscribe."""

from __future__ import annotations

import contextlib
from datetime import datetime

from flask import Blueprint
from flask import current_app
from flask import g
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from marshmallow import ValidationError
from sqlalchemy import bindparam
from sqlalchemy import select
from sqlalchemy import update
from sqlalchemy.orm import contains_eager
from sqlalchemy.orm import joinedload

from hub.contracts import Metric
from hub.extensions import db
from hub.i18n import survey_language
from hub.links import LinkExpired
from hub.links import LinkInvalid
from hub.links import check_not_expired
from hub.links import read_rating_token
from hub.links import read_unsubscribe_token
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from hub.models import utcnow
from hub.ratings import MAX_COMMENT_LENGTH
from hub.ratings import RatingLocked
from hub.ratings import rating_for
from hub.ratings import record_comment
from hub.ratings import record_first_score
from hub.ratings import record_score
from hub.ratings import unchanged
from hub.suppressions import is_suppressed
from hub.suppressions import suppress
from hub.surveys import MetricMissing
from hub.surveys import effective_settings
from hub.surveys import metric_named
from hub.surveys import settings_of
from hub.surveys import text_color_on

#: Served by the customers' own app (hub.web.customers), which has no CSRF protection:
#: the signed token in the URL is the customer's credential; a CSRF cookie would only
#: make answers fail for people whose mail app blocks cookies, and the one-click
#: unsubscribe POST comes from mail providers, which never have one.
bp = Blueprint("public", __name__)


class PublicPageError(Exception):
    """A link that cannot be used; rendered as a friendly page with a 4xx status."""

    def __init__(self, template: str, status: int) -> None:
        super().__init__(template)
        self.template = template
        self.status = status


def private_page(response):
    """Every answer of the customers' app (hub.web.customers registers it)."""
    # The URL is the customer's credential: keep it out of caches, other sites' Referer
    # headers and other sites' frames.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response  # frames: the app-wide CSP (hub.web.security) refuses them


@bp.errorhandler(PublicPageError)
def public_page_error(error: PublicPageError):
    return render_template(error.template), error.status


def _dress(settings: dict, customer_locale: str | None) -> None:
    """Show the page in the customer's language and the survey's brand."""
    g.locale = survey_language(settings["language"], customer_locale)
    g.brand_color = settings["brand_color"]
    g.brand_text = text_color_on(settings["brand_color"])
    g.company = settings["company_name"]


#: The rating page only shows things: one narrow row, no ORM objects to build.
_VIEW = (
    select(
        Delivery.id,
        Delivery.locale,
        Delivery.opened_at,
        Delivery.survey_id,
        Survey.metric,
        Survey.scale,
        Survey.settings,
    )
    .join(Survey, Survey.id == Delivery.survey_id)
    .where(Delivery.id == bindparam("delivery_id"))
)
_OPENED = (
    update(Delivery)
    .where(Delivery.id == bindparam("delivery_id"), Delivery.opened_at.is_(None))
    .values(opened_at=bindparam("now"))
)
#: An answer's first look: the delivery, its survey and its rating's score (if any) as
#: one narrow row; a first score is stored from it (the ORM rows are read only to
#: change a rating).
_ANSWERED = _VIEW.add_columns(
    Delivery.agent_ref,
    Rating.id.label("rating_id"),
    Rating.value.label("rated_value"),
    Rating.scale.label("rated_scale"),
    Rating.suspected_scanner.label("rated_by_scanner"),
).outerjoin(Rating, Rating.delivery_id == Delivery.id)
#: The pages that record or read an answer: the delivery with its survey and its rating
#: (if any) as ORM rows, in one statement.
_ANSWER = (
    select(Delivery)
    .join(Delivery.survey)
    .outerjoin(Delivery.rating)
    .options(contains_eager(Delivery.survey), contains_eager(Delivery.rating))
    .where(Delivery.id == bindparam("delivery_id"))
)


def _read_token(token: str) -> tuple[int, datetime]:
    """The delivery id and issue time of a score link (404 when it is not one of ours)."""
    try:
        return read_rating_token(token)
    except LinkInvalid:
        raise PublicPageError("public/link_invalid.html", 404) from None


def _survey_page(
    survey_id: int, metric_key: str, stored: dict | None, locale: str | None, issued_at
) -> tuple[Metric, dict]:
    """The survey's metric and settings, the page dressed in its language and brand, and
    the link's age checked against the survey's expiry."""
    try:
        metric = metric_named(metric_key, survey_id)
    except MetricMissing:
        current_app.logger.error("Survey %s: metric plugin missing", survey_id)
        raise PublicPageError("public/unavailable.html", 503) from None
    try:
        settings = effective_settings(metric, stored or {})
    except ValidationError as exc:
        current_app.logger.error("Survey %s has invalid settings: %s", survey_id, exc)
        raise PublicPageError("public/unavailable.html", 503) from None
    _dress(settings, locale)
    try:
        check_not_expired(issued_at, settings["link_expiry_days"], utcnow())
    except LinkExpired:
        raise PublicPageError("public/link_expired.html", 410) from None
    return metric, settings


def _load(token: str) -> tuple[Delivery, Metric, dict]:
    """The delivery behind a score link (with its survey and rating), its metric and
    settings; sets the page language."""
    delivery_id, issued_at = _read_token(token)
    if request.method == "GET":
        # Showing the comment or thank-you page only reads (and may note the page
        # opened): no transaction, so no BEGIN and ROLLBACK round trips.
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    delivery = _answer_rows(delivery_id)
    survey = delivery.survey
    metric, settings = _survey_page(
        survey.id, survey.metric, survey.settings, delivery.locale, issued_at
    )
    return delivery, metric, settings


def _answer_rows(delivery_id: int) -> Delivery:
    """The delivery with its survey and rating as ORM rows (404 when it is gone)."""
    found = db.session.execute(_ANSWER, {"delivery_id": delivery_id})
    delivery = found.unique().scalar_one_or_none()
    if delivery is None:
        raise PublicPageError("public/link_invalid.html", 404)
    return delivery


def _opened(delivery_id: int, opened_at: datetime | None) -> None:
    """Note the first time the rating page was opened (the funnel's "opened" step).

    A mail scanner's prefetch counts too, as any email "open" does; a rating always
    counts as opened, so the funnel never narrows backwards. The commit expires the
    session's rows: read what the page needs before.
    """
    if opened_at is None:
        db.session.execute(_OPENED, {"delivery_id": delivery_id, "now": utcnow()})
        db.session.commit()


def _point(metric: Metric, scale: int, score: int):
    if not metric.check(score, scale):
        raise PublicPageError("public/score_invalid.html", 400)
    return next(p for p in metric.points(scale) if p.value == score)


@bp.get("/r/<token>/<int(signed=True):score>")
def rate(token: str, score: int):
    """Confirm a score. A GET records nothing: mail scanners prefetch links.

    The page reads one row and, the first time, notes that it was opened with one
    conditional UPDATE: it uses a connection of its own in autocommit, not the ORM
    session, so no transaction (no BEGIN and ROLLBACK round trips; the driver keeps its
    prepared statements, which a ROLLBACK drops) and no unit of work to set up.
    """
    delivery_id, issued_at = _read_token(token)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        row = connection.execute(_VIEW, {"delivery_id": delivery_id}).one_or_none()
        if row is None:
            raise PublicPageError("public/link_invalid.html", 404)
        metric, _ = _survey_page(row.survey_id, row.metric, row.settings, row.locale, issued_at)
        point = _point(metric, row.scale, score)
        if row.opened_at is None:  # see _opened
            connection.execute(_OPENED, {"delivery_id": delivery_id, "now": utcnow()})
    return render_template("public/rate.html", point=point, metric=metric, scale=row.scale)


@bp.post("/r/<token>/<int(signed=True):score>")
def record(token: str, score: int):
    """Record the score (the rating page submits this itself), then ask for a comment.

    A first score (the usual answer) is stored from one narrow row with Core
    statements, the page's first opening noted in the same transaction; the same score
    again changes nothing. Changing a score reads the delivery's ORM rows and goes
    through `record_score`, as does a first score a concurrent click stored first.
    """
    delivery_id, issued_at = _read_token(token)
    automatic = request.form.get("auto") == "1"
    connection = db.session.connection()
    row = connection.execute(_ANSWERED, {"delivery_id": delivery_id}).one_or_none()
    if row is None:
        raise PublicPageError("public/link_invalid.html", 404)
    metric, _ = _survey_page(row.survey_id, row.metric, row.settings, row.locale, issued_at)
    _point(metric, row.scale, score)
    done = redirect(url_for("public.comment", token=token), code=303)
    if row.rating_id is None:
        if row.opened_at is None:  # see _opened
            connection.execute(_OPENED, {"delivery_id": delivery_id, "now": utcnow()})
        if record_first_score(row.id, row.survey_id, row.agent_ref, score, row.scale):
            return done
    elif unchanged(
        row.rated_value, row.rated_scale, row.rated_by_scanner, score, row.scale, automatic
    ):
        _opened(delivery_id, row.opened_at)  # as any answer does (rows from before opens)
        return done  # the same score again (the page reloaded): nothing else to store
    # The token, the survey's settings and the score were checked above.
    delivery = _answer_rows(delivery_id)
    scale = delivery.survey.scale
    _opened(delivery.id, delivery.opened_at)  # the page was shown first: usually noted
    try:
        record_score(delivery, score, scale, automatic=automatic)
    except RatingLocked as locked:
        top = metric.highest(scale)
        return render_template("public/already.html", rating=locked.rating, top=top), 409
    return done


@bp.route("/r/<token>/comment", methods=["GET", "POST"])
def comment(token: str):
    """Offer (and save) an optional comment once a score is recorded."""
    delivery, metric, settings = _load(token)
    rating = rating_for(delivery)
    if rating is None:
        points = metric.points(delivery.survey.scale)
        _opened(delivery.id, delivery.opened_at)
        return render_template("public/choose.html", token=token, metric=metric, points=points)
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
        delivery = db.session.get(
            Delivery, read_unsubscribe_token(token), options=[joinedload(Delivery.survey)]
        )
    except LinkInvalid:
        delivery = None
    if delivery is None or not delivery.requester_email:
        raise PublicPageError("public/link_invalid.html", 404)
    # Unsubscribing must work even when the survey's plugin or settings are broken.
    with contextlib.suppress(MetricMissing, ValidationError):
        _dress(settings_of(delivery.survey), delivery.locale)
    if request.method == "POST":
        suppress(delivery.requester_email, "unsubscribed")
        return render_template("public/unsubscribed.html")
    if is_suppressed(delivery.requester_email):
        return render_template("public/unsubscribed.html")
    return render_template("public/unsubscribe.html", email=delivery.requester_email)
