"""API: stats, the report page's numbers and a survey's coverage funnel."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from flask_smorest import abort

from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.api.base import survey_or_404
from hub.api.schemas import StatsQuerySchema
from hub.api.schemas import StatsSchema
from hub.funnel import DayRange
from hub.funnel import count_funnel
from hub.reports import Period
from hub.reports import Scope
from hub.reports import build_report

stats = api_blueprint("api_stats", "/api/v1/stats", "Stats")
BLUEPRINTS = (stats,)


@stats.route("")
class Stats(MethodView):
    @stats.arguments(StatsQuerySchema, location="query")
    @stats.response(200, StatsSchema)
    def get(self, args):
        """The numbers of the report page for one survey (`survey`) or all surveys of a
        metric (`metric`): a score per scale with n, margin and formula, the response
        rate, and for a survey its coverage funnel. Days are UTC; without `from`/`to`,
        all time."""
        admin_only("stats")
        if ("survey" in args) == ("metric" in args):
            abort(422, message="Give either survey or metric.", errors={"survey": ["or metric"]})
        registry = current_app.extensions["hub"].registry
        survey = survey_or_404(args["survey"]) if "survey" in args else None
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
