"""The signed-in start page: the admin's overview, or the agent's own ratings."""

from __future__ import annotations

from flask import Blueprint
from flask import current_app
from flask import redirect
from flask import render_template
from flask import url_for
from flask_login import current_user
from flask_login import login_required
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from hub.extensions import db
from hub.models import Connection
from hub.models import Survey
from hub.web.setup import responses

bp = Blueprint("home", __name__)


@bp.get("/")
@login_required
def index():
    """Admins: every survey with its state and responses, and where to start. Agents:
    their own ratings."""
    if not current_user.is_admin:
        return redirect(url_for("reports.mine"))
    registry = current_app.extensions["hub"].registry
    # Each row shows its connection: load them in one query, not one per survey.
    query = select(Survey).options(selectinload(Survey.connection))
    surveys = db.session.execute(query.order_by(Survey.metric, Survey.id)).scalars().all()
    answers = responses()
    connections = db.session.execute(select(func.count()).select_from(Connection)).scalar_one()
    return render_template(
        "home.html",
        metrics=list(registry.metrics.values()),
        helpdesks=registry.helpdesks,
        surveys=surveys,
        responses=answers,
        connection_count=connections,
    )
