"""The reports pages: one survey, all surveys of a metric, an agent's own ratings, and the
ratings as CSV. The numbers come from `hub.reports`; this module reads the date range
from the query string and formats for people."""

from __future__ import annotations

import re
from datetime import UTC
from datetime import date
from datetime import datetime
from typing import Any

from flask import Blueprint
from flask import Response
from flask import abort
from flask import current_app
from flask import redirect
from flask import render_template
from flask import request
from flask import stream_with_context
from flask import url_for
from flask_login import current_user
from flask_login import login_required
from sqlalchemy import select

from hub.contracts import Metric
from hub.exports import csv_chunks
from hub.extensions import db
from hub.models import Survey
from hub.reports import EXPORT_COLUMNS
from hub.reports import Period
from hub.reports import Scope
from hub.reports import build_report
from hub.reports import metrics_rated
from hub.reports import rating_rows
from hub.web.access import admin_required
from hub.web.access import own_agent_ref
from hub.web.access import own_connection_id

bp = Blueprint("reports", __name__)

#: The quick ranges offered above every report, in days (plus "All time").
QUICK_DAYS = (7, 30, 90)
DEFAULT_DAYS = 30
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Group names shown as headings (the metric's own names are singular and lower case).
GROUP_TITLES = {"promoter": "Promoters", "passive": "Passives", "detractor": "Detractors"}
SURVEY_ID = "int(max=2147483647)"  # larger ids are no survey (and overflow PostgreSQL)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _today() -> date:
    return datetime.now(UTC).date()


def _day(raw: str) -> date | None:
    """A YYYY-MM-DD day, None for an empty field; ValueError for anything else."""
    raw = raw.strip()
    if not raw:
        return None
    if not _DAY.fullmatch(raw):
        raise ValueError(raw)
    return date.fromisoformat(raw)


def period_from_args(args: Any, today: date) -> tuple[Period, str]:
    """The report period from the `from` and `to` query arguments, and a message when
    they could not be used (the default period is used instead).

    Both absent: the last 30 days. Present but empty: that side is open, so `?from=&to=`
    is all time (as is the form submitted with both fields cleared).
    """
    default = Period.last_days(DEFAULT_DAYS, today)
    if "from" not in args and "to" not in args:
        return default, ""
    try:
        start, end = _day(args.get("from", "")), _day(args.get("to", ""))
    except ValueError:
        return default, (
            "The dates were not understood: write them as year-month-day, e.g. "
            f"{today.isoformat()}. Showing the last {DEFAULT_DAYS} days instead."
        )
    if start and end and start > end:
        return default, (
            f"The start date ({start.isoformat()}) is after the end date ({end.isoformat()}). "
            f"Showing the last {DEFAULT_DAYS} days instead."
        )
    return Period(start, end), ""


def range_args(period: Period) -> dict[str, str]:
    """Query arguments that select `period` again (for links to other views of it)."""
    return {
        "from": period.start.isoformat() if period.start else "",
        "to": period.end.isoformat() if period.end else "",
    }


def _here(**args: str) -> str:
    """This page's address with other query arguments."""
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def quick_ranges(period: Period, today: date) -> list[dict[str, Any]]:
    """The quick links: last 7, 30 and 90 days, and all time, the current one marked."""
    ranges = [(f"{days} days", Period.last_days(days, today)) for days in QUICK_DAYS]
    ranges.append(("All time", Period()))
    return [
        {"label": label, "href": _here(**range_args(choice)), "current": choice == period}
        for label, choice in ranges
    ]


def _page_context(period: Period, error: str, today: date) -> dict[str, Any]:
    return {
        "period": period,
        "range_error": error,
        "range_args": range_args(period),
        "quick_ranges": quick_ranges(period, today),
        "all_time_href": _here(**range_args(Period())),
        "form_action": _here(),
    }


def _metric(key: str) -> Metric:
    metric = current_app.extensions["hub"].registry.metrics.get(key)
    if metric is None:
        abort(404)
    return metric


def _survey(survey_id: int) -> Survey:
    survey = db.session.get(Survey, survey_id)
    if survey is None:
        abort(404)
    return survey


# -- formatting for people -------------------------------------------------------------


def _number(value: float, decimals: int) -> str:
    text = f"{value:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _decimals(unit: str) -> int:
    # A mean on a short scale needs two decimals to move; shares and NPS points one.
    return 1 if unit in ("%", "points") else 2


@bp.app_template_filter("report_score")
def report_score(value: float | None, unit: str) -> str:
    """A score for people: "+12" (NPS points), "62.5%", "4.6" (a mean); "—" for none."""
    if value is None:
        return "—"
    text = _number(value, _decimals(unit))
    if unit == "points":
        if text.startswith("-"):
            return "−" + text[1:]
        return text if text == "0" else "+" + text
    return text + "%" if unit == "%" else text


@bp.app_template_filter("report_margin")
def report_margin(margin: float | None, unit: str) -> str:
    """A 95% margin of error: "±5.2" (points for NPS and shares), "—" when unknown."""
    if margin is None:
        return "—"
    return "±" + _number(margin, _decimals(unit))


@bp.app_template_filter("report_percent")
def report_percent(value: float | None) -> str:
    """A share in percent with one decimal at most: "40%", "33.3%"; "—" for none."""
    return "—" if value is None else _number(value, 1) + "%"


@bp.app_template_filter("report_count")
def report_count(value: int) -> str:
    """A count with thousands separated: "12,345"."""
    return f"{value:,}"


@bp.app_template_filter("report_day")
def report_day(value: date | datetime | None, year: bool = True) -> str:
    """A day as "3 Mar 2026" (or "3 Mar"), whatever the server's locale."""
    if value is None:
        return ""
    text = f"{value.day} {MONTHS[value.month - 1]}"
    return f"{text} {value.year}" if year else text


@bp.app_template_filter("report_month")
def report_month(value: date) -> str:
    """A month as "Mar 2026"."""
    return f"{MONTHS[value.month - 1]} {value.year}"


@bp.app_template_filter("report_group")
def report_group(name: str) -> str:
    """A group's heading: "Promoters", "Positive"."""
    return GROUP_TITLES.get(name, name.capitalize())


@bp.app_template_filter("report_period")
def report_period(period: Period) -> str:
    """The period in words: "1 Mar 2026 – 30 Mar 2026", "all time", "since 1 Mar 2026"."""
    if period.start and period.end:
        return f"{report_day(period.start)} – {report_day(period.end)}"
    if period.start:
        return f"since {report_day(period.start)}"
    if period.end:
        return f"up to {report_day(period.end)}"
    return "all time"


def score_domain(metric: Metric, scale: int, unit: str) -> tuple[float, float, list[float]]:
    """A trend chart's vertical range and its gridlines, from the score's unit: −100…100
    for NPS points, 0…100 for shares, the scale's lowest…highest value for a mean."""
    if unit == "points":
        return -100, 100, [-100, -50, 0, 50, 100]
    if unit == "%":
        return 0, 100, [0, 25, 50, 75, 100]
    values = [point.value for point in metric.points(scale)]
    low, high = min(values), max(values)
    step = max(1, (high - low) // 6)
    return low, high, list(range(low, high + 1, step))


@bp.context_processor
def report_helpers() -> dict[str, Any]:
    return {"score_domain": score_domain}


# -- pages ---------------------------------------------------------------------------


@bp.get(f"/surveys/<{SURVEY_ID}:survey_id>/report", endpoint="survey")
@admin_required
def survey_report(survey_id: int):
    """One survey's report over a date range."""
    survey = _survey(survey_id)
    metric = _metric(survey.metric)
    today = _today()
    period, error = period_from_args(request.args, today)
    report = build_report(
        metric, Scope(metric.key, survey_id=survey.id), period, [survey.scale], today=today
    )
    return render_template(
        "reports/survey.html",
        survey=survey,
        metric=metric,
        report=report,
        **_page_context(period, error, today),
    )


@bp.get("/metrics/<key>/report", endpoint="metric")
@admin_required
def metric_report(key: str):
    """A metric's report over all its surveys (one score per scale when they differ)."""
    metric = _metric(key)
    today = _today()
    period, error = period_from_args(request.args, today)
    surveys = (
        db.session.execute(select(Survey).where(Survey.metric == key).order_by(Survey.id))
        .scalars()
        .all()
    )
    report = build_report(
        metric,
        Scope(key),
        period,
        [s.scale for s in surveys],
        today=today,
        surveys=surveys,
    )
    return render_template(
        "reports/metric.html",
        metric=metric,
        surveys=surveys,
        report=report,
        **_page_context(period, error, today),
    )


@bp.get("/me", endpoint="mine")
@login_required
def mine():
    """The signed-in agent's own ratings: a score, trend and comments per metric.

    Only the agent's own ratings are read, whatever the query string says; admins see
    everyone's in the metric reports instead.
    """
    agent_ref = own_agent_ref()
    if agent_ref is None:
        return redirect(url_for("home.index"))
    today = _today()
    period, error = period_from_args(request.args, today)
    # An agent the helpdesk does not know has no ratings (and the stand-in ref
    # own_agent_ref() gives them is not text PostgreSQL accepts).
    connection_id = own_connection_id()
    rated = (
        set(metrics_rated(agent_ref, connection_id, period))
        if current_user.helpdesk_user_id
        else set()
    )
    reports = [
        build_report(
            metric,
            Scope(key, agent_ref=agent_ref, connection_id=connection_id),
            period,
            today=today,
            by_agent=False,
        )
        for key, metric in current_app.extensions["hub"].registry.metrics.items()
        if key in rated
    ]
    return render_template(
        "reports/mine.html", reports=reports, **_page_context(period, error, today)
    )


# -- CSV -------------------------------------------------------------------------------


def _csv_response(metric: Metric, scope: Scope, name: str) -> Response:
    period, _ = period_from_args(request.args, _today())
    args = range_args(period)
    span = f"{args['from'] or 'start'}-to-{args['to'] or 'now'}"
    filename = re.sub(r"[^A-Za-z0-9_.-]", "_", f"surveyhub-{name}-ratings-{span}.csv")
    rows = rating_rows(metric, scope, period)
    response = Response(
        stream_with_context(csv_chunks(EXPORT_COLUMNS, rows)),
        content_type="text/csv; charset=utf-8",
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"  # customers' addresses and words
    return response


@bp.get(f"/surveys/<{SURVEY_ID}:survey_id>/ratings.csv", endpoint="survey_csv")
@admin_required
def survey_csv(survey_id: int):
    """One survey's ratings in the date range, as CSV (streamed)."""
    survey = _survey(survey_id)
    metric = _metric(survey.metric)
    return _csv_response(metric, Scope(metric.key, survey_id=survey.id), f"survey-{survey.id}")


@bp.get("/metrics/<key>/ratings.csv", endpoint="metric_csv")
@admin_required
def metric_csv(key: str):
    """All ratings of a metric's surveys in the date range, as CSV (streamed)."""
    metric = _metric(key)
    return _csv_response(metric, Scope(key), key)
