"""API: ratings, filtered, a page at a time with a cursor stable under inserts, and the
same filters as a streamed CSV or NDJSON export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import time
from datetime import timedelta
from typing import Any

from flask import Response
from flask import current_app
from flask import g
from flask import stream_with_context
from flask.views import MethodView
from sqlalchemy import ColumnElement
from sqlalchemy import Select
from sqlalchemy import and_
from sqlalchemy import false
from sqlalchemy import or_

from hub.access import own_ratings
from hub.api.base import api_blueprint
from hub.api.base import page_cursor
from hub.api.base import read_cursor
from hub.api.base import stream_doc
from hub.api.schemas import ExportQuerySchema
from hub.api.schemas import RatingPageSchema
from hub.api.schemas import RatingQuerySchema
from hub.exports import csv_chunks
from hub.exports import ndjson_chunks
from hub.extensions import db
from hub.models import Rating
from hub.models import Survey
from hub.reports import rating_details

ratings = api_blueprint("api_ratings", "/api/v1/ratings", "Ratings")
BLUEPRINTS = (ratings,)

#: A rating's fields, in the order of the CSV export's columns.
FIELDS = (
    "id",
    "survey_id",
    "metric",
    "ticket_id",
    "requester_email",
    "agent_ref",
    "value",
    "scale",
    "group",
    "comment",
    "suspected_scanner",
    "created_at",
    "commented_at",
)
#: Rows read from the database at a time by an export (a server-side cursor on PostgreSQL).
EXPORT_BATCH = 1000


def day_start(day) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, time(), UTC)


def group_condition(group: str) -> ColumnElement[bool]:
    """Ratings in `group` (e.g. detractor) by their metric's own grouping, as SQL: each
    installed metric's values on each of its scales that fall in the group."""
    metrics = current_app.extensions["hub"].registry.metrics
    parts = []
    for key, metric in metrics.items():
        for scale in metric.scales:
            values = [
                p.value for p in metric.points(scale) if metric.group(p.value, scale) == group
            ]
            if values:
                parts.append(
                    and_(Survey.metric == key, Rating.scale == scale, Rating.value.in_(values))
                )
    return or_(*parts) if parts else false()


def ratings_query(args: dict[str, Any]) -> Select:
    """Ratings with their ticket, address and survey, oldest first, filtered by `args`
    (survey, metric, agent, group, from, to, cursor) and by what the token's user sees."""
    query = rating_details().order_by(Rating.id)
    visible = own_ratings(g.api_user)
    if visible is not None:  # an agent's own ratings, whatever `agent` says
        query = query.where(visible)
    elif "agent" in args:
        query = query.where(Rating.agent_ref == args["agent"])
    if "survey" in args:
        query = query.where(Rating.survey_id == args["survey"])
    if "metric" in args:
        query = query.where(Survey.metric == args["metric"])
    if "group" in args:
        query = query.where(group_condition(args["group"]))
    if "since" in args:
        query = query.where(Rating.created_at >= day_start(args["since"]))
    if "until" in args and args["until"].year < 9999:
        query = query.where(Rating.created_at < day_start(args["until"] + timedelta(days=1)))
    if "cursor" in args:
        query = query.where(Rating.id > read_cursor(args["cursor"]))
    return query


def rating_record(row: Any) -> dict[str, Any]:
    """One rating as the API gives it (`group` by its metric's grouping)."""
    metric = current_app.extensions["hub"].registry.metrics.get(row.metric)
    group = metric.group(row.value, row.scale) if metric and row.scale in metric.scales else ""
    record = {name: getattr(row, name) for name in FIELDS if name != "group"}
    record["group"] = group
    record["comment"] = record["comment"] or ""
    if not g.api_user.is_admin:  # agents' pages never show customers' addresses
        record["requester_email"] = None
    return record


@ratings.route("")
class Ratings(MethodView):
    @ratings.arguments(RatingQuerySchema, location="query")
    @ratings.response(200, RatingPageSchema)
    def get(self, args):
        """Ratings, oldest first, a page at a time: `next_cursor` continues after the
        page's last rating, so new ratings never shift pages already read. An agent's
        token sees only the agent's own ratings."""
        rows = db.session.execute(ratings_query(args).limit(args["limit"] + 1)).all()
        page = rows[: args["limit"]]
        more = len(rows) > args["limit"]
        return {
            "items": [rating_record(row) for row in page],
            "next_cursor": page_cursor(page[-1].id) if more else None,
        }


def export_response(
    records: Iterator[dict[str, Any]], fields: tuple[str, ...], fmt: str, name: str
) -> Response:
    """A streamed download of `records` as CSV (columns `fields`) or NDJSON."""
    if fmt == "csv":
        body = csv_chunks(fields, ([r[f] for f in fields] for r in records))
        mimetype = "text/csv"
    else:  # ndjson
        body = ndjson_chunks(records)
        mimetype = "application/x-ndjson"
    response = Response(stream_with_context(body), mimetype=mimetype)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"  # customers' addresses and words
    return response


def _export(args: dict[str, Any], fmt: str) -> Response:
    query = ratings_query(args).execution_options(yield_per=EXPORT_BATCH)

    def records() -> Iterator[dict[str, Any]]:
        for row in db.session.execute(query):
            yield rating_record(row)

    return export_response(records(), FIELDS, fmt, "ratings")


@ratings.route("/export.csv")
class RatingsCsv(MethodView):
    @ratings.arguments(ExportQuerySchema, location="query")
    @ratings.doc(responses=stream_doc("text/csv", "A header row, then a row each."))
    def get(self, args):
        """Every rating matching the filters of `GET /ratings`, oldest first, as CSV,
        streamed (any number of rows in constant memory; cells that a spreadsheet would
        run as formulas start with a quote)."""
        return _export(args, "csv")


@ratings.route("/export.ndjson")
class RatingsNdjson(MethodView):
    @ratings.arguments(ExportQuerySchema, location="query")
    @ratings.doc(responses=stream_doc("application/x-ndjson", "One JSON object per line."))
    def get(self, args):
        """Every rating matching the filters of `GET /ratings`, oldest first, as
        newline-delimited JSON (the objects of `GET /ratings`), streamed."""
        return _export(args, "ndjson")
