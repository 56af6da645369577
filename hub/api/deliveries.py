"""API: deliveries (each resolved ticket a survey found: its state, skip reason and the
write-back of its rating), a page at a time or as a streamed export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from flask.views import MethodView
from sqlalchemy import Select
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import aliased

from hub.api.base import admin_only
from hub.api.base import api_blueprint
from hub.api.base import page_cursor
from hub.api.base import read_cursor
from hub.api.base import stream_doc
from hub.api.ratings import EXPORT_BATCH
from hub.api.ratings import day_start
from hub.api.ratings import export_response
from hub.api.schemas import DeliveryExportQuerySchema
from hub.api.schemas import DeliveryPageSchema
from hub.api.schemas import DeliveryQuerySchema
from hub.extensions import db
from hub.models import Delivery
from hub.models import Rating
from hub.models import WriteBack

deliveries = api_blueprint("api_deliveries", "/api/v1/deliveries", "Deliveries")
BLUEPRINTS = (deliveries,)

#: The CSV export's columns (the write-back's fields flattened with a prefix).
FIELDS = (
    "id",
    "survey_id",
    "ticket_id",
    "ticket_url",
    "requester_email",
    "agent_ref",
    "state",
    "skip_reason",
    "error",
    "resolved_at",
    "sent_at",
    "opened_at",
    "created_at",
    "rating_id",
    "write_back_state",
    "write_back_attempts",
    "write_back_error",
    "write_back_done_at",
)
CURSOR_KIND = "d"


def deliveries_query(args: dict[str, Any]) -> Select:
    """Deliveries, oldest first, each with its rating's id and latest write-back,
    filtered by `args` (survey, state, skip_reason, agent, from, to, cursor)."""
    older = aliased(WriteBack)
    latest = (
        select(func.max(older.id))
        .where(older.rating_id == Rating.id)
        .correlate(Rating)
        .scalar_subquery()
    )
    query = (
        select(
            Delivery,
            Rating.id.label("rating_id"),
            WriteBack.state.label("wb_state"),
            WriteBack.attempts.label("wb_attempts"),
            WriteBack.last_error.label("wb_error"),
            WriteBack.done_at.label("wb_done_at"),
        )
        .outerjoin(Rating, Rating.delivery_id == Delivery.id)
        .outerjoin(WriteBack, WriteBack.id == latest)
        .order_by(Delivery.id)
    )
    if "survey" in args:
        query = query.where(Delivery.survey_id == args["survey"])
    if "state" in args:
        query = query.where(Delivery.state == args["state"])
    if "skip_reason" in args:
        query = query.where(Delivery.skip_reason == args["skip_reason"])
    if "agent" in args:
        query = query.where(Delivery.agent_ref == args["agent"])
    if "since" in args:
        query = query.where(Delivery.created_at >= day_start(args["since"]))
    if "until" in args and args["until"].year < 9999:
        query = query.where(Delivery.created_at < day_start(args["until"] + timedelta(days=1)))
    if "cursor" in args:
        query = query.where(Delivery.id > read_cursor(args["cursor"], CURSOR_KIND))
    return query


def delivery_record(row: Any) -> dict[str, Any]:
    """One delivery as the API gives it."""
    delivery: Delivery = row[0]
    record = {
        name: getattr(delivery, name)
        for name in FIELDS
        if name != "rating_id" and not name.startswith("write_back")
    }
    record["error"] = record["error"] or ""
    record["rating_id"] = row.rating_id
    record["write_back"] = (
        {
            "state": row.wb_state,
            "attempts": row.wb_attempts or 0,
            "last_error": row.wb_error or "",
            "done_at": row.wb_done_at,
        }
        if row.wb_state
        else None
    )
    return record


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    write_back = record.get("write_back") or {}
    return {
        **record,
        "write_back_state": write_back.get("state", ""),
        "write_back_attempts": write_back.get("attempts", ""),
        "write_back_error": write_back.get("last_error", ""),
        "write_back_done_at": write_back.get("done_at"),
    }


@deliveries.route("")
class Deliveries(MethodView):
    @deliveries.arguments(DeliveryQuerySchema, location="query")
    @deliveries.response(200, DeliveryPageSchema)
    def get(self, args):
        """Deliveries, oldest first, a page at a time (`next_cursor` as with ratings):
        the state of each survey email, why a ticket was skipped, and whether its
        rating was written back to the helpdesk."""
        admin_only("deliveries")
        rows = db.session.execute(deliveries_query(args).limit(args["limit"] + 1)).all()
        page = rows[: args["limit"]]
        more = len(rows) > args["limit"]
        return {
            "items": [delivery_record(row) for row in page],
            "next_cursor": page_cursor(page[-1][0].id, CURSOR_KIND) if more else None,
        }


def _export(args: dict[str, Any], fmt: str):
    admin_only("deliveries")
    query = deliveries_query(args).execution_options(yield_per=EXPORT_BATCH)

    def records() -> Iterator[dict[str, Any]]:
        for row in db.session.execute(query):
            record = delivery_record(row)
            yield _flat(record) if fmt == "csv" else record
            db.session.expunge(row[0])  # a long export must not grow the session

    return export_response(records(), FIELDS, fmt, "deliveries")


@deliveries.route("/export.csv")
class DeliveriesCsv(MethodView):
    @deliveries.arguments(DeliveryExportQuerySchema, location="query")
    @deliveries.doc(responses=stream_doc("text/csv", "A header row, then a row each."))
    def get(self, args):
        """Every delivery matching the filters of `GET /deliveries`, as CSV, streamed."""
        return _export(args, "csv")


@deliveries.route("/export.ndjson")
class DeliveriesNdjson(MethodView):
    @deliveries.arguments(DeliveryExportQuerySchema, location="query")
    @deliveries.doc(responses=stream_doc("application/x-ndjson", "One JSON object per line."))
    def get(self, args):
        """Every delivery matching the filters of `GET /deliveries`, as newline-delimited
        JSON (the objects of `GET /deliveries`), streamed."""
        return _export(args, "ndjson")
