"""API: surveys (list, read, activate, deactivate)."""

from __future__ import annotations

from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.api.base import survey_or_404
from hub.api.schemas import ActivateSchema
from hub.api.schemas import SurveySchema
from hub.connections import TROUBLE
from hub.extensions import db
from hub.models import Survey
from hub.pipeline.activation import ActivationFailed
from hub.pipeline.activation import activate
from hub.pipeline.activation import deactivate
from hub.surveys import MetricMissing

surveys = api_blueprint("api_surveys", "/api/v1/surveys", "Surveys")
BLUEPRINTS = (surveys,)


@surveys.route("")
class Surveys(MethodView):
    @surveys.response(200, SurveySchema(many=True))
    def get(self):
        """Every survey."""
        admin_only("surveys")
        return db.session.execute(select(Survey).order_by(Survey.id)).scalars().all()


@surveys.route("/<int(max=2147483647):survey_id>")
class OneSurvey(MethodView):
    @surveys.response(200, SurveySchema)
    def get(self, survey_id: int):
        """One survey."""
        admin_only("surveys")
        return survey_or_404(survey_id)


@surveys.route("/<int(max=2147483647):survey_id>/activate")
class Activate(MethodView):
    @surveys.arguments(ActivateSchema)
    @surveys.response(200, SurveySchema)
    def post(self, args, survey_id: int):
        """Prepare the helpdesk and start the survey's trigger (a `write` token)."""
        admin_only("surveys")
        survey = survey_or_404(survey_id)
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
        admin_only("surveys")
        survey = survey_or_404(survey_id)
        deactivate(survey)
        return survey
