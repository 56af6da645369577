"""API: ratings, filtered, a page at a time with a cursor stable under inserts."""

from __future__ import annotations

import base64
from datetime import UTC
from datetime import datetime
from datetime import time
from datetime import timedelta

from flask import current_app
from flask import g
from flask.views import MethodView
from flask_smorest import abort
from sqlalchemy import select

from hub.api.base import api_blueprint
from hub.api.schemas import RatingPageSchema
from hub.api.schemas import RatingQuerySchema
from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey

ratings = api_blueprint("api_ratings", "/api/v1/ratings", "Ratings")
BLUEPRINTS = (ratings,)


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
