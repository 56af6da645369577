"""The deliveries log (every ticket the hub saw, filtered, paginated by keyset), retrying a
failed write-back, and a survey's coverage funnel."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from datetime import date
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_required
from sqlalchemy import ColumnElement
from sqlalchemy import and_
from sqlalchemy import exists
from sqlalchemy import false
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import aliased
from werkzeug.datastructures import MultiDict

from hub.extensions import db
from hub.funnel import NOT_SENT_STATES
from hub.funnel import STAGE_HELP
from hub.funnel import STAGES
from hub.funnel import STATE_HELP
from hub.funnel import DayRange
from hub.funnel import count_funnel
from hub.funnel import reason_condition
from hub.funnel import stage_condition
from hub.funnel import state_condition
from hub.funnel import with_ratings
from hub.models import Delivery
from hub.models import DeliveryState
from hub.models import Rating
from hub.models import Survey
from hub.models import User
from hub.models import WriteBack
from hub.models import WriteBackState
from hub.models import utcnow
from hub.pipeline.decide import REASONS
from hub.pipeline.writeback import retry_write_back
from hub.surveys import MetricMissing
from hub.surveys import metric_of
from hub.web.access import admin_required
from hub.web.access import own_agent_ref
from hub.web.access import own_connection_id

bp = Blueprint("deliveries", __name__)

PAGE_SIZE = 50
#: The funnel's range when none is given.
FUNNEL_DAYS = 30
#: How much of a comment a log row shows.
COMMENT_PREVIEW = 100
STATES = [state.value for state in DeliveryState]
WRITE_BACK_STATES = [state.value for state in WriteBackState]


@dataclass
class LogFilters:
    """The deliveries log's filters, as given in the query string and checked."""

    survey: int | None = None
    state: str | None = None
    reason: str | None = None
    agent: str | None = None
    stage: str | None = None
    writeback: str | None = None
    days: DayRange = field(default_factory=DayRange)

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of the filters (over deliveries joined with their rating)."""
        conditions = [self.days.condition()]
        if self.survey is not None:
            conditions.append(Delivery.survey_id == self.survey)
        if self.state:
            conditions.append(state_condition(self.state))
        if self.reason:
            conditions.append(reason_condition(self.reason))
        if self.agent:
            conditions.append(Delivery.agent_ref == self.agent)
        if self.stage:
            conditions.append(stage_condition(self.stage))
        if self.writeback:
            conditions.append(latest_write_back_in(self.writeback))
        return conditions

    def args(self) -> dict[str, Any]:
        """The filters as query arguments, for links that keep them."""
        args: dict[str, Any] = {
            "survey": self.survey,
            "state": self.state,
            "reason": self.reason,
            "agent": self.agent,
            "stage": self.stage,
            "writeback": self.writeback,
            **self.days.args(),
        }
        return {name: value for name, value in args.items() if value not in (None, "")}


def latest_write_back_in(state: str) -> ColumnElement[bool]:
    """The rating's newest write-back is in `state`: the newest carries the latest answer,
    so its state says whether the helpdesk has it."""
    newer = aliased(WriteBack)
    # An uncorrelated set of rating ids: the database builds it once, not once per row.
    latest = select(WriteBack.rating_id).where(
        WriteBack.state == state,
        ~exists().where(newer.rating_id == WriteBack.rating_id, newer.id > WriteBack.id),
    )
    return Rating.id.in_(latest)


def parse_day(value: str, label: str, errors: dict[str, str], name: str) -> date | None:
    """A YYYY-MM-DD day, or None with a message in `errors` when it is not one."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors[name] = f"{label} must be a date like 2025-01-31 (got “{value[:40]}”)."
        return None


def parse_days(args: MultiDict, errors: dict[str, str]) -> DayRange:
    """The `from`/`to` range, checked."""
    first = parse_day(args.get("from", "").strip(), "From", errors, "from")
    last = parse_day(args.get("to", "").strip(), "To", errors, "to")
    if first and last and first > last:
        errors["to"] = "To must be on or after From."
    return DayRange(first, last)


def _choice(args: MultiDict, name: str, label: str, allowed, errors: dict[str, str]):
    value = args.get(name, "").strip()
    if value and value not in allowed:
        errors[name] = f"{label} “{value[:60]}” is not one of: {', '.join(allowed)}."
        return None
    return value or None


def parse_filters(
    args: MultiDict, surveys: dict[int, Survey], admin: bool
) -> tuple[LogFilters, dict[str, str]]:
    """The log's filters from the query string, and a message per invalid one."""
    errors: dict[str, str] = {}
    filters = LogFilters(days=parse_days(args, errors))
    survey = args.get("survey", "").strip()
    if survey:
        if survey.isdigit() and int(survey) in surveys:
            filters.survey = int(survey)
        else:
            errors["survey"] = f"There is no survey “{survey[:40]}”; choose one from the list."
    filters.state = _choice(args, "state", "State", STATES, errors)
    filters.reason = _choice(args, "reason", "Skip reason", list(REASONS), errors)
    filters.stage = _choice(args, "stage", "Stage", STAGES, errors)
    filters.writeback = _choice(args, "writeback", "Write-back", WRITE_BACK_STATES, errors)
    agent = args.get("agent", "").strip()
    # An agent's own view is fixed by who they are; the argument never widens it.
    if admin and agent:
        if len(agent) > 100 or not agent.isprintable():
            errors["agent"] = "Agent must be a helpdesk user id (at most 100 characters)."
        else:
            filters.agent = agent
    return filters, errors


def _page_bound(args: MultiDict, name: str, errors: dict[str, str]) -> int | None:
    value = args.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 18:
        errors[name] = "This page link is broken; start again from the newest deliveries."
        return None
    return int(value)


@dataclass
class LogRow:
    """One delivery as the log shows it."""

    delivery: Delivery
    rating: Rating | None
    write_back: WriteBack | None
    survey_name: str
    agent_name: str
    #: The score on its scale ("9/10") and its group ("promoter").
    score: str = ""
    group: str = ""
    comment: str = ""


def _page(conditions: list, before: int | None, after: int | None):
    """One page of rows (newest first) and whether newer and older rows exist.

    Keyset pagination on the id: each page is an index range scan, never an OFFSET.
    """
    query = with_ratings(select(Delivery, Rating)).where(*conditions)
    if after is not None:
        rows = db.session.execute(
            query.where(Delivery.id > after).order_by(Delivery.id.asc()).limit(PAGE_SIZE + 1)
        ).all()
        newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        older = bool(rows) and _exists(conditions, Delivery.id < rows[-1].Delivery.id)
    else:
        if before is not None:
            query = query.where(Delivery.id < before)
        rows = db.session.execute(query.order_by(Delivery.id.desc()).limit(PAGE_SIZE + 1)).all()
        older = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        newer = (
            before is not None
            and bool(rows)
            and _exists(conditions, Delivery.id > rows[0].Delivery.id)
        )
    return rows, newer, older


def _exists(conditions: list, bound: ColumnElement[bool]) -> bool:
    query = with_ratings(select(Delivery.id)).where(*conditions, bound).limit(1)
    return db.session.execute(query).first() is not None


def _latest_write_backs(rating_ids: list[int]) -> dict[int, WriteBack]:
    if not rating_ids:
        return {}
    query = select(WriteBack).where(WriteBack.rating_id.in_(rating_ids)).order_by(WriteBack.id)
    return {wb.rating_id: wb for wb in db.session.execute(query).scalars()}


def _answer(rating: Rating, survey: Survey | None) -> tuple[str, str]:
    """The score on its scale and its group, e.g. ("9/10", "promoter")."""
    if survey is None:
        return str(rating.value), ""
    try:
        metric = metric_of(survey)
        return (
            f"{rating.value}/{metric.highest(rating.scale)}",
            metric.group(rating.value, rating.scale),
        )
    except (MetricMissing, LookupError, ValueError):
        # A missing plugin, or a scale it no longer offers: the log still shows the answer.
        return str(rating.value), ""


def _preview(comment: str) -> str:
    comment = " ".join(comment.split())
    if len(comment) <= COMMENT_PREVIEW:
        return comment
    return comment[: COMMENT_PREVIEW - 1].rstrip() + "…"


@bp.get("/deliveries")
@login_required
def index():
    """Every ticket the hub saw, newest first: state, reason, times, rating, write-back."""
    own_ref = own_agent_ref()
    admin = own_ref is None
    surveys = {
        survey.id: survey
        for survey in db.session.execute(select(Survey).order_by(Survey.name, Survey.id)).scalars()
    }
    filters, errors = parse_filters(request.args, surveys, admin)
    before = _page_bound(request.args, "before", errors)
    after = _page_bound(request.args, "after", errors)
    people = dict(
        db.session.execute(
            select(User.helpdesk_user_id, User.name)
            .where(User.helpdesk_user_id.is_not(None))
            .order_by(User.name)
        ).all()
    )
    options = {
        "survey": [(sid, f"{s.name} ({s.metric.upper()})") for sid, s in surveys.items()],
        "state": [(state, state) for state in STATES],
        "reason": [(reason, reason) for reason in REASONS],
        "stage": [(stage, stage) for stage in STAGES],
        "writeback": [(state, state) for state in WRITE_BACK_STATES],
        "agent": [(ref, name or ref) for ref, name in people.items()],
    }
    if filters.agent and filters.agent not in people:
        options["agent"].append((filters.agent, filters.agent))
    page: dict[str, Any] = {
        "filters": filters,
        "errors": errors,
        "options": options,
        "surveys": surveys,
        "admin": admin,
        "reasons": REASONS,
        "rows": [],
        "total": None,
        "newer": False,
        "older": False,
        "paged": before is not None or after is not None,
    }
    if errors:
        return render_template("deliveries/index.html", **page), 400
    conditions = filters.conditions()
    if own_ref is not None:
        conditions.append(_own_rows(own_ref))
    page["total"] = db.session.execute(
        with_ratings(select(func.count()).select_from(Delivery)).where(*conditions)
    ).scalar_one()
    rows, page["newer"], page["older"] = _page(conditions, before, after)
    write_backs = _latest_write_backs([row.Rating.id for row in rows if row.Rating is not None])
    for delivery, rating in rows:
        survey = surveys.get(delivery.survey_id)
        item = LogRow(
            delivery=delivery,
            rating=rating,
            write_back=write_backs.get(rating.id) if rating is not None else None,
            survey_name=survey.name if survey is not None else f"Survey {delivery.survey_id}",
            agent_name=people.get(delivery.agent_ref) or delivery.agent_ref or "",
        )
        if rating is not None:
            item.score, item.group = _answer(rating, survey)
            item.comment = _preview(rating.comment or "")
        page["rows"].append(item)
    page["here"] = _here()
    return render_template("deliveries/index.html", **page)


def _own_rows(own_ref: str) -> ColumnElement[bool]:
    """An agent's rows: those of their helpdesk id on their own helpdesk connection
    (ids are unique only within one helpdesk account), none without one."""
    if not current_user.helpdesk_user_id:
        return false()
    surveys = select(Survey.id).where(Survey.connection_id == own_connection_id())
    return and_(Delivery.agent_ref == own_ref, Delivery.survey_id.in_(surveys))


def _here() -> str:
    """This page's path and query, for forms that come back to it."""
    query = request.query_string.decode("utf-8", "replace")
    return f"{request.path}?{query}" if query else request.path


def _local(path: str) -> bool:
    """Whether `path` stays on this site (no scheme, host or protocol-relative `//`)."""
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return False
    parts = urlsplit(path)
    return not parts.scheme and not parts.netloc


@bp.post("/write-backs/<int(max=2147483647):write_back_id>/retry")
@admin_required
def retry(write_back_id: int):
    """Put a failed write-back back in line, then return to the log."""
    write_back = db.session.get(WriteBack, write_back_id)
    if write_back is None:
        abort(404)
    ticket = write_back.rating.delivery.ticket_id
    if retry_write_back(write_back_id):
        flash(f"The write-back of ticket {ticket} is queued again.", "success")
    else:
        db.session.refresh(write_back)
        flash(
            f"The write-back of ticket {ticket} is {write_back.state}; only a failed "
            "write-back can be retried.",
            "warning",
        )
    target = request.form.get("next", "")
    return redirect(target if _local(target) else url_for("deliveries.index"), code=303)


def _percent(value: float | None) -> str:
    """A share as the funnel shows it: whole percents, a decimal below 10%, and never a
    rounded 0% or 100% that is not exactly so."""
    if value is None:
        return "–"
    if value in (0, 100):
        return f"{value:.0f}%"
    if value < 0.1:
        return "<0.1%"
    if value >= 99.5:
        return ">99%"
    return f"{value:.0f}%" if value >= 10 else f"{value:.1f}%"


@bp.get("/surveys/<int(max=2147483647):survey_id>/funnel")
@admin_required
def funnel(survey_id: int):
    """Where a survey's tickets went: seen → eligible → sent → opened → rated → commented,
    with every reason a ticket got no survey."""
    survey = db.session.get(Survey, survey_id)
    if survey is None:
        abort(404)
    errors: dict[str, str] = {}
    given = parse_days(request.args, errors)
    today = utcnow().date()
    last = given.last or today
    first = given.first or DayRange.last_days(FUNNEL_DAYS, last).first
    if first > last:
        errors.setdefault("to", "To must be on or after From.")
    days = DayRange(first, last)
    page: dict[str, Any] = {
        "survey": survey,
        "days": days,
        "errors": errors,
        "today": today,
        "stages": STAGES,
        "stage_help": STAGE_HELP,
        "state_help": STATE_HELP,
        "reasons": REASONS,
        "percent": _percent,
        "presets": [
            *(
                (label, DayRange.last_days(n, today))
                for label, n in (("Last 7 days", 7), ("Last 30 days", 30), ("Last 90 days", 90))
            ),
            ("Since the survey was created", DayRange(survey.created_at.date(), today)),
        ],
        "funnel": None,
    }
    if errors:
        return render_template("deliveries/funnel.html", **page), 400
    page["funnel"] = count_funnel(survey.id, days)
    page["not_sent_states"] = NOT_SENT_STATES
    return render_template("deliveries/funnel.html", **page)
