"""API: surveys (list, create, read, update settings, activate, deactivate, dry run)."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import ValidationError
from sqlalchemy import select

from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.api.base import survey_or_404
from hub.api.schemas import ActivateSchema
from hub.api.schemas import DryRunInputSchema
from hub.api.schemas import DryRunSchema
from hub.api.schemas import SurveyCreateSchema
from hub.api.schemas import SurveySchema
from hub.api.schemas import SurveyUpdateSchema
from hub.connections import TROUBLE
from hub.extensions import db
from hub.models import Connection
from hub.models import Survey
from hub.pipeline.activation import ActivationFailed
from hub.pipeline.activation import activate
from hub.pipeline.activation import attribute_change_errors
from hub.pipeline.activation import deactivate
from hub.pipeline.scan import scan_survey
from hub.surveys import MetricMissing
from hub.surveys import effective_settings
from hub.surveys import metric_of
from hub.surveys import new_survey

surveys = api_blueprint("api_surveys", "/api/v1/surveys", "Surveys")
BLUEPRINTS = (surveys,)
#: Tickets a dry run lists (its counts cover all).
PREVIEW_ROWS = 100


def survey_out(survey: Survey) -> dict[str, Any]:
    """A survey as the API gives it: its settings with the defaults filled in."""
    try:
        settings = effective_settings(metric_of(survey), survey.settings or {})
    except (MetricMissing, ValidationError):
        settings = dict(survey.settings or {})
    return {
        **{c: getattr(survey, c) for c in SurveySchema().fields if c != "settings"},
        "settings": settings,
    }


def _unprocessable(errors: dict[str, Any], message: str = "") -> None:
    abort(422, message=message or "Some values are not valid; see errors.", errors=errors)


@surveys.route("")
class Surveys(MethodView):
    @surveys.response(200, SurveySchema(many=True))
    def get(self):
        """Every survey."""
        admin_only("surveys")
        found = db.session.execute(select(Survey).order_by(Survey.id)).scalars().all()
        return [survey_out(survey) for survey in found]

    @surveys.arguments(SurveyCreateSchema)
    @surveys.response(201, SurveySchema)
    def post(self, args):
        """A new survey on a helpdesk connection, inactive until activated (a `write`
        token); settings not given take the defaults."""
        admin_only("surveys")
        metric = current_app.extensions["hub"].registry.metrics.get(args["metric"])
        if metric is None:
            _unprocessable({"metric": [f"No installed plugin provides '{args['metric']}'."]})
        scale = args.get("scale", metric.default_scale)
        if scale not in metric.scales:
            offered = ", ".join(str(s) for s in metric.scales)
            _unprocessable({"scale": [f"{metric.title} offers the scales {offered}."]})
        connection = db.session.get(Connection, args["connection_id"])
        if connection is None:
            _unprocessable({"connection_id": [f"There is no connection {args['connection_id']}."]})
        settings = args.get("settings") or {}
        survey = new_survey(metric, args["name"], scale, connection, settings)
        try:
            effective_settings(metric, survey.settings)
        except ValidationError as exc:
            db.session.rollback()
            _unprocessable({"settings": exc.messages})
        db.session.commit()
        return survey_out(survey)


@surveys.route("/<int(max=2147483647):survey_id>")
class OneSurvey(MethodView):
    @surveys.response(200, SurveySchema)
    def get(self, survey_id: int):
        """One survey."""
        admin_only("surveys")
        return survey_out(survey_or_404(survey_id))

    @surveys.arguments(SurveyUpdateSchema)
    @surveys.response(200, SurveySchema)
    def patch(self, args, survey_id: int):
        """Rename the survey or change some of its settings (a `write` token); whether
        the trigger is active never changes here. A new attribute of an active survey
        is defined in the helpdesk first (409 when the helpdesk refuses)."""
        admin_only("surveys")
        survey = survey_or_404(survey_id)
        try:
            metric = metric_of(survey)
        except MetricMissing as exc:
            abort(409, message=str(exc))
        stored = {**(survey.settings or {}), **args.get("settings", {})}
        try:
            loaded = effective_settings(metric, stored)
        except ValidationError as exc:
            _unprocessable({"settings": exc.messages})
        problems = attribute_change_errors(survey, loaded)
        if problems:
            abort(409, message=problems["attribute_name"][0], errors={"settings": problems})
        survey.settings = stored
        if "name" in args:
            survey.name = args["name"]
        db.session.commit()
        return survey_out(survey)


@surveys.route("/<int(max=2147483647):survey_id>/activate")
class Activate(MethodView):
    @surveys.arguments(ActivateSchema, required=False)
    @surveys.response(200, SurveySchema)
    def post(self, args, survey_id: int):
        """Prepare the helpdesk and start the survey's trigger (a `write` token)."""
        admin_only("surveys")
        survey = survey_or_404(survey_id)
        if not survey.active:
            try:
                activate(survey, args["lookback_days"])
            except (ActivationFailed, MetricMissing, ValidationError, *TROUBLE) as exc:
                db.session.rollback()
                abort(409, message=f"The trigger was not activated. {exc}")
        return survey_out(survey)


@surveys.route("/<int(max=2147483647):survey_id>/deactivate")
class Deactivate(MethodView):
    @surveys.response(200, SurveySchema)
    def post(self, survey_id: int):
        """Stop the survey's trigger; emails not sent yet are cancelled (a `write` token)."""
        admin_only("surveys")
        survey = survey_or_404(survey_id)
        deactivate(survey)
        return survey_out(survey)


@surveys.route("/<int(max=2147483647):survey_id>/dry-run")
class DryRun(MethodView):
    @surveys.arguments(DryRunInputSchema, required=False)
    @surveys.response(200, DryRunSchema)
    def post(self, args, survey_id: int):
        """Which recently resolved tickets would get a survey, and why each other one
        would be skipped, with the saved settings. Nothing is written or sent (it reads
        the helpdesk, so it needs a `write` token like other actions that spend the
        helpdesk's request budget); 409 when the helpdesk cannot be read."""
        admin_only("surveys")
        survey = survey_or_404(survey_id)
        tickets: list[dict[str, Any]] = []

        def collect(ticket, reason):
            if len(tickets) < PREVIEW_ROWS:
                tickets.append(
                    {
                        "ticket_id": ticket.id,
                        "requester_email": ticket.requester_email,
                        "resolved_at": ticket.resolved_at,
                        "send": reason is None,
                        "skip_reason": reason,
                    }
                )

        try:
            report = scan_survey(
                survey.id, dry_run=True, on_decision=collect, lookback_days=args["lookback_days"]
            )
        except (MetricMissing, ValidationError, *TROUBLE) as exc:
            abort(409, message=f"The preview could not read the helpdesk: {exc}")
        return {
            "seen": report.seen,
            "would_send": report.pending,
            "already_decided": report.already,
            "skipped": report.skipped,
            "tickets": tickets,
        }
