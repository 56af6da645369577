"""The signed-in home page: what is installed and what is configured."""

from __future__ import annotations

from flask import Blueprint
from flask import current_app
from flask import render_template
from flask_login import login_required
from sqlalchemy import func
from sqlalchemy import select

from hub.extensions import db
from hub.models import Connection
from hub.models import Survey

bp = Blueprint("home", __name__)


@bp.get("/")
@login_required
def index():
    """Metrics and helpdesks the installed plugins offer, and the surveys set up so far."""
    registry = current_app.extensions["hub"].registry
    surveys = db.session.execute(select(Survey).order_by(Survey.id)).scalars().all()
    connections = db.session.execute(select(func.count()).select_from(Connection)).scalar_one()
    return render_template(
        "home.html",
        metrics=registry.metrics.values(),
        helpdesks=registry.helpdesks.values(),
        surveys=surveys,
        connection_count=connections,
    )
