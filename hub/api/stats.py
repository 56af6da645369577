"""API: stats, the report page's numbers (optionally by agent, day, week or survey) and a
survey's coverage funnel."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask import g
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from hub.access import agent_scope
from hub.api.base import api_blueprint
from hub.api.base import survey_or_404
from hub.api.schemas import StatsQuerySchema
from hub.api.schemas import StatsSchema
from hub.contracts import Score
from hub.extensions import db
from hub.funnel import DayRange
from hub.funnel import count_funnel
from hub.models import Survey
from hub.reports import Period
from hub.reports import Report
from hub.reports import Scope
from hub.reports import build_report

stats = api_blueprint("api_stats", "/api/v1/stats", "Stats")
BLUEPRINTS = (stats,)


def score_out(scale: int, score: Score) -> dict[str, Any]:
    """A score as the API gives it."""
    return {
        "scale": scale,
        "value": score.value,
        "unit": score.unit,
        "n": score.n,
        "margin": score.margin,
        "formula": score.formula,
        "groups": score.groups,
    }


def series(report: Report, by: str) -> list[dict[str, Any]]:
    """One score per agent, trend bucket or survey (each on its scale)."""
    rows = []
    for part in report.parts:
        if by == "agent":
            for agent in part.agents:
                rows.append(
                    {
                        "key": agent.ref or "",
                        "label": agent.name,
                        **score_out(part.scale, agent.score),
                    }
                )
        elif by in ("day", "week"):
            for bucket in part.trend:
                day = bucket.start.isoformat()
                rows.append({"key": day, "label": day, **score_out(part.scale, bucket.score)})
    if by == "survey":
        for row in report.surveys:
            rows.append(
                {"key": str(row.survey_id), "label": row.name, **score_out(row.scale, row.score)}
            )
    return rows


def _scope(args: dict[str, Any]) -> tuple[Scope, Survey | None]:
    user = g.api_user
    survey = survey_or_404(args["survey"]) if "survey" in args else None
    key = survey.metric if survey else args["metric"]
    if user.is_admin:
        return Scope(key, survey_id=survey.id if survey else None), survey
    # An agent's token: their own ratings on their own helpdesk account, as /me shows.
    own = agent_scope(user)
    if survey is not None and survey.connection_id != own.connection_id:
        abort(404, message=f"There is no survey {survey.id}.")
    scope = Scope(
        key,
        survey_id=survey.id if survey else None,
        agent_ref=own.agent_ref,
        connection_id=own.connection_id,
    )
    return scope, survey


@stats.route("")
class Stats(MethodView):
    @stats.arguments(StatsQuerySchema, location="query")
    @stats.response(200, StatsSchema)
    def get(self, args):
        """The numbers of the report page for one survey (`survey`) or all surveys of a
        metric (`metric`): a score per scale with n, margin and formula, the response
        rate, and for a survey its coverage funnel; with `by`, also a score per agent,
        day, week or survey. Days are UTC; without `from`/`to`, all time. An agent's
        token gets the agent's own numbers (no funnel)."""
        if ("survey" in args) == ("metric" in args):
            abort(422, message="Give either survey or metric.", errors={"survey": ["or metric"]})
        if args.get("by") == "survey" and "survey" in args:
            abort(422, message="by=survey needs metric.", errors={"by": ["survey needs metric"]})
        scope, survey = _scope(args)
        metric = current_app.extensions["hub"].registry.metrics.get(scope.metric)
        if metric is None:
            abort(404, message=f"No installed plugin provides the metric '{scope.metric}'.")
        by = args.get("by")
        period = Period(args.get("since"), args.get("until"))
        surveys = None
        if by == "survey":
            query = select(Survey).where(Survey.metric == metric.key).order_by(Survey.id)
            if scope.connection_id is not None:
                query = query.where(Survey.connection_id == scope.connection_id)
            surveys = db.session.execute(query).scalars().all()
        funnel = counted = None
        if survey is not None and g.api_user.is_admin:
            # The funnel and the response rate: one pass over the survey's deliveries.
            counted = count_funnel(
                survey.id, DayRange(period.start, period.end), response_in=period
            )
            funnel = {
                "stages": counted.stages,
                "skipped": {reason or "": n for reason, n in counted.skipped.items()},
                "not_sent": counted.not_sent,
            }
        # Only what the answer holds: no comments, a trend or agents only when asked.
        report = build_report(
            metric,
            scope,
            period,
            [survey.scale] if survey else [],
            by_agent=by == "agent",
            surveys=surveys,
            granularity=by if by in ("day", "week") else None,
            trend=by in ("day", "week"),
            comments=False,
            response=counted.response if counted is not None else None,
        )
        return {
            "metric": metric.key,
            "survey_id": survey.id if survey else None,
            "scores": [score_out(part.scale, part.score) for part in report.parts],
            "series": series(report, by) if by else [],
            "response_rate": {
                "sent": report.response.sent,
                "rated": report.response.rated,
                "rate": report.response.rate,
            },
            "funnel": funnel,
        }
