"""The API's resources: surveys and ratings (read), for a personal token's user."""

from __future__ import annotations

import base64
from datetime import UTC
from datetime import datetime
from datetime import time
from datetime import timedelta

from flask import current_app
from flask import g
from flask.views import MethodView
from flask_smorest import Blueprint
from flask_smorest import abort
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from hub.api.auth import authenticate
from hub.api.problems import from_http_exception
from hub.api.schemas import ActivateSchema
from hub.api.schemas import RatingPageSchema
from hub.api.schemas import RatingQuerySchema
from hub.api.schemas import StatsQuerySchema
from hub.api.schemas import StatsSchema
from hub.api.schemas import SurveySchema
from hub.connections import TROUBLE
from hub.extensions import csrf
from hub.extensions import db
from hub.funnel import DayRange
from hub.funnel import count_funnel
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from hub.pipeline.activation import ActivationFailed
from hub.pipeline.activation import activate
from hub.pipeline.activation import deactivate
from hub.reports import Period
from hub.reports import Scope
from hub.reports import build_report
from hub.surveys import MetricMissing

surveys = Blueprint("api_surveys", __name__, url_prefix="/api/v1/surveys", description="Surveys")
ratings = Blueprint("api_ratings", __name__, url_prefix="/api/v1/ratings", description="Ratings")
stats = Blueprint("api_stats", __name__, url_prefix="/api/v1/stats", description="Stats")
BLUEPRINTS = (surveys, ratings, stats)
for _blueprint in BLUEPRINTS:
    _blueprint.before_request(authenticate)
    _blueprint.register_error_handler(HTTPException, from_http_exception)
    csrf.exempt(_blueprint)  # a token, not a cookie, authenticates: no CSRF to guard


def _admin_only() -> None:
    if not g.api_user.is_admin:
        abort(403, message="Only an admin's token sees surveys; agents see their ratings.")


@surveys.route("")
class Surveys(MethodView):
    @surveys.response(200, SurveySchema(many=True))
    def get(self):
        """Every survey."""
        _admin_only()
        return db.session.execute(select(Survey).order_by(Survey.id)).scalars().all()


@surveys.route("/<int(max=2147483647):survey_id>")
class OneSurvey(MethodView):
    @surveys.response(200, SurveySchema)
    def get(self, survey_id: int):
        """One survey."""
        _admin_only()
        return _survey(survey_id)


@surveys.route("/<int(max=2147483647):survey_id>/activate")
class Activate(MethodView):
    @surveys.arguments(ActivateSchema)
    @surveys.response(200, SurveySchema)
    def post(self, args, survey_id: int):
        """Prepare the helpdesk and start the survey's trigger (a `write` token)."""
        _admin_only()
        survey = _survey(survey_id)
        if not survey.active:
            try:
                activate(survey, args["lookback_days"])
            except (ActivationFailed, MetricMissing, *TROUBLE) as exc:
                db.session.rollback()
                abort(409, message=f"The trigger was not activated. {exc}")
        return survey


@surveys.route("/<int(max=2147483647):survey_id>/deactivate")
class Deactivate(MethodView):
    @surveys.response(200, SurveySchema)
    def post(self, survey_id: int):
        """Stop the survey's trigger; emails not sent yet are cancelled (a `write` token)."""
        _admin_only()
        survey = _survey(survey_id)
        deactivate(survey)
        return survey


def _survey(survey_id: int) -> Survey:
    survey = db.session.get(Survey, survey_id)
    if survey is None:
        abort(404, message=f"There is no survey {survey_id}.")
    return survey


def _cursor(rating_id: int) -> str:
    return base64.urlsafe_b64encode(f"r{rating_id}".encode()).decode().rstrip("=")


def _after(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    if not raw.startswith("r") or not raw[1:].isascii() or not raw[1:].isdigit():
        abort(422, message="The cursor is not one this API gave.", errors={"cursor": ["bad"]})
    return int(raw[1:])


@ratings.route("")
class Ratings(MethodView):
    @ratings.arguments(RatingQuerySchema, location="query")
    @ratings.response(200, RatingPageSchema)
    def get(self, args):
        """Ratings, oldest first, a page at a time: `next_cursor` continues after the
        page's last rating, so new ratings never shift pages already read. An agent's
        token sees only the agent's own ratings."""
        metrics = current_app.extensions["hub"].registry.metrics
        query = (
            select(Rating, Delivery.ticket_id, Delivery.requester_email, Survey)
            .join(Delivery, Delivery.id == Rating.delivery_id)
            .join(Survey, Survey.id == Rating.survey_id)
            .order_by(Rating.id)
            .limit(args["limit"] + 1)
        )
        user = g.api_user
        if not user.is_admin:
            if not user.helpdesk_user_id or not user.connection_id:
                return {"items": [], "next_cursor": None}
            query = query.where(
                Rating.agent_ref == user.helpdesk_user_id,
                Survey.connection_id == user.connection_id,
            )
        elif "agent" in args:
            query = query.where(Rating.agent_ref == args["agent"])
        if "survey" in args:
            query = query.where(Rating.survey_id == args["survey"])
        if "metric" in args:
            query = query.where(Survey.metric == args["metric"])
        if "since" in args:
            query = query.where(Rating.created_at >= datetime.combine(args["since"], time(), UTC))
        if "until" in args and args["until"].year < 9999:
            end = datetime.combine(args["until"] + timedelta(days=1), time(), UTC)
            query = query.where(Rating.created_at < end)
        if "cursor" in args:
            query = query.where(Rating.id > _after(args["cursor"]))
        rows = db.session.execute(query).all()
        items = []
        for rating, ticket_id, email, survey in rows[: args["limit"]]:
            metric = metrics.get(survey.metric)
            group = metric.group(rating.value, rating.scale) if metric else ""
            if "group" in args and group != args["group"]:
                continue
            items.append(
                {
                    "id": rating.id,
                    "survey_id": rating.survey_id,
                    "metric": survey.metric,
                    "ticket_id": ticket_id,
                    "requester_email": email,
                    "agent_ref": rating.agent_ref,
                    "value": rating.value,
                    "scale": rating.scale,
                    "group": group,
                    "comment": rating.comment,
                    "suspected_scanner": rating.suspected_scanner,
                    "created_at": rating.created_at,
                    "commented_at": rating.commented_at,
                }
            )
        more = len(rows) > args["limit"]
        last = rows[args["limit"] - 1][0].id if more else None
        return {"items": items, "next_cursor": _cursor(last) if more else None}


@stats.route("")
class Stats(MethodView):
    @stats.arguments(StatsQuerySchema, location="query")
    @stats.response(200, StatsSchema)
    def get(self, args):
        """The numbers of the report page for one survey (`survey`) or all surveys of a
        metric (`metric`): a score per scale with n, margin and formula, the response
        rate, and for a survey its coverage funnel. Days are UTC; without `from`/`to`,
        all time."""
        _admin_only()
        if ("survey" in args) == ("metric" in args):
            abort(422, message="Give either survey or metric.", errors={"survey": ["or metric"]})
        registry = current_app.extensions["hub"].registry
        survey = _survey(args["survey"]) if "survey" in args else None
        key = survey.metric if survey else args["metric"]
        metric = registry.metrics.get(key)
        if metric is None:
            abort(404, message=f"No installed plugin provides the metric '{key}'.")
        period = Period(args.get("since"), args.get("until"))
        scope = Scope(key, survey_id=survey.id if survey else None)
        scales = [survey.scale] if survey else []
        report = build_report(metric, scope, period, scales, by_agent=False)
        funnel = None
        if survey is not None:
            counted = count_funnel(survey.id, DayRange(period.start, period.end))
            funnel = {
                "stages": counted.stages,
                "skipped": {reason or "": n for reason, n in counted.skipped.items()},
                "not_sent": counted.not_sent,
            }
        return {
            "metric": key,
            "survey_id": survey.id if survey else None,
            "scores": [
                {
                    "scale": part.scale,
                    "value": part.score.value,
                    "unit": part.score.unit,
                    "n": part.score.n,
                    "margin": part.score.margin,
                    "formula": part.score.formula,
                    "groups": part.score.groups,
                }
                for part in report.parts
            ],
            "response_rate": {
                "sent": report.response.sent,
                "rated": report.response.rated,
                "rate": report.response.rate,
            },
            "funnel": funnel,
        }
