"""Setting a survey up, the seed's steps as pages: metric, distribution, app directory,
connect, agents, trigger settings and activation; and the agents page."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import session
from flask import url_for
from flask_babel import ngettext
from flask_login import current_user
from marshmallow import ValidationError
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from hub.agents import archive
from hub.agents import helpdesk_agents
from hub.agents import invite_agents
from hub.agents import restore
from hub.connections import TROUBLE
from hub.connections import checked_connection
from hub.connections import first_field
from hub.contracts import Metric
from hub.crypto import SecretsUnreadable
from hub.emails import preview_email
from hub.extensions import db
from hub.helpdesk import Helpdesk
from hub.invitations import send_invitations
from hub.models import Connection
from hub.models import Rating
from hub.models import Role
from hub.models import Survey
from hub.models import User
from hub.models import UserStatus
from hub.pipeline.activation import ActivationFailed
from hub.pipeline.activation import activate as activate_survey
from hub.pipeline.activation import attribute_change_errors
from hub.pipeline.activation import deactivate as deactivate_survey
from hub.pipeline.scan import scan_survey
from hub.reports import COUNTS_BY_PERSON
from hub.surveys import MetricMissing
from hub.surveys import SurveySettingsSchema
from hub.surveys import effective_settings
from hub.surveys import metric_of
from hub.surveys import new_survey
from hub.web.access import admin_required
from hub.web.forms import field_views
from hub.web.forms import read_form

bp = Blueprint("setup", __name__)

#: The wizard's steps, in order, as the step list shows them.
STEPS = ("Distribution", "App directory", "Connect", "Agents", "Trigger settings")
#: Distribution kinds; only Trigger exists so far (the others are shown as coming).
DISTRIBUTIONS = (
    ("trigger", "Trigger", "Automated emails after a ticket is resolved.", True),
    ("email-link", "Email signature link", "A rating link in every agent reply.", False),
    ("widget", "Website widget", "Ask visitors on your site.", False),
)
#: The most tickets a dry-run preview lists (the counts cover all of them).
PREVIEW_ROWS = 200
MAX_LOOKBACK_DAYS = 90


def _registry():
    return current_app.extensions["hub"].registry


def _metric(key: str) -> Metric:
    metric = _registry().metrics.get(key)
    if metric is None:
        abort(404)
    return metric


def _survey(survey_id: int) -> Survey:
    survey = db.session.get(Survey, survey_id) if survey_id < 2**31 else None
    if survey is None:
        abort(404)
    return survey


def _one_line(text: str | None, limit: int) -> str:
    """Typed text as one line of printable characters (NUL cannot even be stored in
    PostgreSQL), spaces collapsed, at most `limit` characters."""
    printable = "".join(ch if ch.isprintable() else " " for ch in text or "")
    return " ".join(printable.split())[:limit]


def _draft_key(key: str) -> str:
    return f"survey-draft:{key}"


def responses(survey_ids: list[int] | None = None) -> dict[int, int]:
    """Answers per survey, all time, counted as the reports count them (a suspected mail
    scanner's clicks are not a person's answer)."""
    query = select(Rating.survey_id, func.count()).where(COUNTS_BY_PERSON)
    if survey_ids is not None:
        if not survey_ids:
            return {}
        query = query.where(Rating.survey_id.in_(survey_ids))
    return dict(db.session.execute(query.group_by(Rating.survey_id)).all())


# -- metric pages -------------------------------------------------------------------


@bp.get("/metrics/<key>")
@admin_required
def metric(key: str):
    """A metric's surveys, with Start NPS (when there is none) and New survey."""
    metric = _metric(key)
    query = select(Survey).where(Survey.metric == key).options(selectinload(Survey.connection))
    surveys = db.session.execute(query.order_by(Survey.id)).scalars().all()
    return render_template(
        "setup/metric.html",
        metric=metric,
        surveys=surveys,
        responses=responses([s.id for s in surveys]),
        helpdesks=_registry().helpdesks,
        draft=session.get(_draft_key(key)),
    )


# -- wizard: distribution, app directory, connect ----------------------------------


@bp.route("/metrics/<key>/new", methods=["GET", "POST"])
@admin_required
def distribution(key: str):
    """Step 1: name the survey, pick its scale and the distribution (Trigger)."""
    metric = _metric(key)
    draft = dict(session.get(_draft_key(key)) or {})
    errors: dict[str, str] = {}
    if request.method == "POST":
        draft = {
            "name": _one_line(request.form.get("name"), 200),
            "scale": request.form.get("scale") or str(metric.default_scale),
            "distribution": request.form.get("distribution") or "",
        }
        if not draft["name"]:
            errors["name"] = "Give the survey a name, e.g. “Support NPS”."
        if not re.fullmatch(r"[0-9]{1,3}", draft["scale"]) or int(draft["scale"]) not in (
            metric.scales
        ):
            errors["scale"] = "Pick one of the scales offered."
        if draft["distribution"] != "trigger":
            errors["distribution"] = "Choose Trigger: the other kinds are not available yet."
        session[_draft_key(key)] = draft  # kept even when invalid: Back loses nothing
        if not errors:
            return redirect(url_for("setup.apps", key=key))
    draft.setdefault("name", f"{metric.title} survey")
    draft.setdefault("scale", str(metric.default_scale))
    draft.setdefault("distribution", "trigger")
    return render_template(
        "setup/distribution.html",
        metric=metric,
        draft=draft,
        errors=errors,
        distributions=DISTRIBUTIONS,
        step=0,
        steps=STEPS,
    ), (422 if errors else 200)


def _draft_or_restart(key: str) -> dict[str, Any] | None:
    draft = session.get(_draft_key(key))
    if not draft or draft.get("distribution") != "trigger":
        return None
    return draft


@bp.get("/metrics/<key>/new/apps")
@admin_required
def apps(key: str):
    """Step 2: the app directory, one tile per installed helpdesk plugin."""
    metric = _metric(key)
    if _draft_or_restart(key) is None:
        flash("Start by naming the survey and choosing Trigger.", "info")
        return redirect(url_for("setup.distribution", key=key))
    connections = db.session.execute(select(Connection).order_by(Connection.id)).scalars().all()
    return render_template(
        "setup/apps.html",
        metric=metric,
        helpdesks=list(_registry().helpdesks.values()),
        connections=connections,
        step=1,
        steps=STEPS,
    )


def _helpdesk_class(key: str) -> type[Helpdesk]:
    connector = _registry().helpdesks.get(key)
    if connector is None:
        abort(404)
    return connector


def _new_survey(metric: Metric, draft: dict[str, Any], connection: Connection) -> Survey:
    return new_survey(metric, draft["name"], int(draft["scale"]), connection)


@bp.route("/metrics/<key>/new/connect/<helpdesk>", methods=["GET", "POST"])
@admin_required
def connect(key: str, helpdesk: str):
    """Step 3: connect the helpdesk; the key is checked at once and nothing is saved
    until it works."""
    metric = _metric(key)
    connector_class = _helpdesk_class(helpdesk)
    draft = _draft_or_restart(key)
    if draft is None:
        flash("Start by naming the survey and choosing Trigger.", "info")
        return redirect(url_for("setup.distribution", key=key))
    schema = connector_class.settings_schema()
    values: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    if request.method == "POST":
        values = read_form(schema, request.form)
        try:
            values = schema.load(values)
        except ValidationError as exc:
            errors = exc.messages
        if not errors:
            connection, errors = _verified_connection(connector_class, values)
            if connection is not None:
                survey = _new_survey(metric, draft, connection)
                db.session.commit()
                session.pop(_draft_key(key), None)
                flash(f"Connected to {connection.name}.", "success")
                return redirect(url_for("setup.survey_agents", survey_id=survey.id))
    return render_template(
        "setup/connect.html",
        metric=metric,
        connector=connector_class,
        fields=field_views(schema, values, errors),
        step=2,
        steps=STEPS,
    ), (422 if errors else 200)


def _verified_connection(
    connector_class: type[Helpdesk], values: dict[str, Any]
) -> tuple[Connection | None, dict[str, list[str]]]:
    checked = checked_connection(connector_class, values)
    for warning in checked.warnings:
        flash(warning, "warning")
    return checked.connection, checked.errors


@bp.route("/connections/<int(max=2147483647):connection_id>/edit", methods=["GET", "POST"])
@admin_required
def edit_connection(connection_id: int):
    """Change a connection's settings or replace its API key (an expiring key, a new
    one with more roles); checked like Connect, and nothing changes until it works."""
    connection = db.session.get(Connection, connection_id)
    if connection is None:
        abort(404)
    connector_class = _helpdesk_class(connection.helpdesk)
    schema = connector_class.settings_schema()
    secret_names = connector_class.secret_fields()
    values: dict[str, Any] = dict(connection.settings or {})
    errors: dict[str, Any] = {}
    if request.method == "POST":
        values = read_form(schema, request.form)
        try:
            # A secret left empty keeps the stored one.
            values = schema.load(values, partial=tuple(secret_names))
        except ValidationError as exc:
            errors = exc.messages
        if not errors:
            try:
                kept = connection.get_secrets()
            except SecretsUnreadable as exc:
                kept, errors = {}, {first_field(schema, secret=True): [str(exc)]}
            merged = {**kept, **values}
            missing = [name for name in secret_names if not merged.get(name)]
            if missing:
                errors = {
                    name: ["Paste the key: the stored one cannot be used."] for name in missing
                }
        if not errors:
            checked, errors = _verified_connection(connector_class, merged)
            if checked is not None:
                db.session.expunge(checked)  # only its checked values are kept
                connection.settings = checked.settings
                connection.secrets_encrypted = checked.secrets_encrypted
                connection.status = checked.status
                connection.status_message = checked.status_message
                db.session.commit()
                flash(f"The connection to {connection.name} is updated.", "success")
                return redirect(url_for("setup.agents"))
    return render_template(
        "setup/connection.html",
        connection=connection,
        connector=connector_class,
        fields=field_views(schema, values, errors),
    ), (422 if errors else 200)


@bp.post("/metrics/<key>/new/use/<int(max=2147483647):connection_id>")
@admin_required
def use_connection(key: str, connection_id: int):
    """Step 3, the other way: use a helpdesk connection made before."""
    metric = _metric(key)
    draft = _draft_or_restart(key)
    connection = db.session.get(Connection, connection_id)
    if connection is None:
        abort(404)
    if draft is None:
        return redirect(url_for("setup.distribution", key=key))
    survey = _new_survey(metric, draft, connection)
    db.session.commit()
    session.pop(_draft_key(key), None)
    return redirect(url_for("setup.survey_agents", survey_id=survey.id))


# -- agents ----------------------------------------------------------------------------


def _invite_chosen(connection: Connection, chosen: list[str]) -> None:
    invited = invite_agents(connection, chosen, current_user.name or current_user.email)
    if invited.error:
        flash(f"Could not read the helpdesk's users: {invited.error}", "error")
        return
    sent = len(invited.users) - len(invited.failed)
    if sent:
        flash(
            ngettext(
                "Invited %(num)d agent by email, with a link to set a password.",
                "Invited %(num)d agents by email, each with a link to set a password.",
                sent,
            ),
            "success",
        )
    for address, why in invited.failed.items():
        flash(f"The invitation to {address} was not sent: {why}", "error")


@bp.route("/surveys/<int(max=2147483647):survey_id>/agents", methods=["GET", "POST"])
@admin_required
def survey_agents(survey_id: int):
    """Step 4: choose the helpdesk's agents to invite; Continue sends the invitations."""
    survey = _survey(survey_id)
    if request.method == "POST":
        _invite_chosen(survey.connection, request.form.getlist("agent"))
        return redirect(url_for("setup.survey", survey_id=survey.id, setup=1))
    rows, error = helpdesk_agents(survey.connection)
    return render_template(
        "setup/agents_step.html",
        survey=survey,
        metric=_registry().metrics.get(survey.metric),
        rows=rows,
        error=error,
        step=3,
        steps=STEPS,
        action=url_for("setup.survey_agents", survey_id=survey.id),
    )


@bp.route("/connections/<int(max=2147483647):connection_id>/agents", methods=["GET", "POST"])
@admin_required
def connection_agents(connection_id: int):
    """Import and invite agents of one helpdesk connection (outside the wizard)."""
    connection = db.session.get(Connection, connection_id)
    if connection is None:
        abort(404)
    if request.method == "POST":
        _invite_chosen(connection, request.form.getlist("agent"))
        return redirect(url_for("setup.agents"))
    rows, error = helpdesk_agents(connection)
    return render_template(
        "setup/agents_step.html",
        connection=connection,
        rows=rows,
        error=error,
        action=url_for("setup.connection_agents", connection_id=connection.id),
    )


@bp.get("/agents")
@admin_required
def agents():
    """Everyone who can sign in, with invitations, archiving and restoring."""
    users = db.session.execute(select(User).order_by(User.role, User.name, User.email)).scalars()
    connections = db.session.execute(select(Connection).order_by(Connection.id)).scalars().all()
    return render_template("setup/agents.html", users=list(users), connections=connections)


def _agent(user_id: int) -> User:
    user = db.session.get(User, user_id) if user_id < 2**31 else None
    if user is None or user.role != Role.AGENT:
        abort(404)
    return user


@bp.post("/agents/<int(max=2147483647):user_id>/archive")
@admin_required
def archive_agent(user_id: int):
    """Archive an agent: they cannot sign in; their ratings stay in every report."""
    user = _agent(user_id)
    archive(user)
    flash(f"{user.email} is archived; their ratings are kept.", "success")
    return redirect(url_for("setup.agents"))


@bp.post("/agents/<int(max=2147483647):user_id>/restore")
@admin_required
def restore_agent(user_id: int):
    """Let an archived agent sign in again (or be invited, if they never set a password)."""
    user = _agent(user_id)
    restore(user)
    flash(f"{user.email} is restored.", "success")
    return redirect(url_for("setup.agents"))


@bp.post("/agents/<int(max=2147483647):user_id>/invite")
@admin_required
def reinvite_agent(user_id: int):
    """Send a fresh invitation (earlier links stop working)."""
    user = _agent(user_id)
    if user.status != UserStatus.INVITED:
        flash(f"{user.email} has set a password already.", "info")
        return redirect(url_for("setup.agents"))
    failed = send_invitations([user], current_user.name or current_user.email)
    if failed:
        flash(f"The invitation to {user.email} was not sent: {failed[user.email]}", "error")
    else:
        flash(f"A new invitation is on its way to {user.email}.", "success")
    return redirect(url_for("setup.agents"))


# -- the survey page: trigger settings and activation ---------------------------------


@bp.route("/surveys/<int(max=2147483647):survey_id>", methods=["GET", "POST"])
@admin_required
def survey(survey_id: int):
    """The survey page: state, Activate/Deactivate, trigger settings (Save settings),
    the email preview and the dry run."""
    survey = _survey(survey_id)
    try:
        metric = metric_of(survey)
    except MetricMissing as exc:
        flash(str(exc), "error")
        return redirect(url_for("home.index"))
    schema = SurveySettingsSchema()
    errors: dict[str, Any] = {}
    name_error = ""
    if request.method == "POST":
        submitted = read_form(schema, request.form)
        name = _one_line(request.form.get("survey_name"), 200)
        try:
            loaded = schema.load(submitted)
        except ValidationError as exc:
            errors = exc.messages
        if not name:
            name_error = "Give the survey a name."
        if not errors and not name_error:
            errors = attribute_change_errors(survey, loaded)
        if not errors and not name_error:
            # Saving settings never changes whether the trigger is active.
            survey.settings = loaded
            survey.name = name
            db.session.commit()
            flash("Settings saved.", "success")
            return redirect(url_for("setup.survey", survey_id=survey.id))
        values = {**effective_settings(metric, survey.settings or {}), **submitted}
        flash("The settings were not saved: see the fields marked below.", "error")
    else:
        try:
            values = effective_settings(metric, survey.settings or {})
        except ValidationError:
            values = dict(survey.settings or {})
        name = survey.name
    return render_template(
        "setup/survey.html",
        survey=survey,
        metric=metric,
        survey_name=name,
        name_error=name_error,
        fields=field_views(schema, values, errors),
        helpdesk=_registry().helpdesks.get(survey.connection.helpdesk),
        wizard=request.args.get("setup") == "1",
        step=4,
        steps=STEPS,
        max_lookback=MAX_LOOKBACK_DAYS,
    ), (422 if errors or name_error else 200)


def _lookback() -> int | None:
    raw = (request.form.get("lookback_days") or "0").strip()
    if not re.fullmatch(r"[0-9]{1,3}", raw) or int(raw) > MAX_LOOKBACK_DAYS:
        return None
    return int(raw)


@bp.post("/surveys/<int(max=2147483647):survey_id>/activate")
@admin_required
def activate(survey_id: int):
    """Prepare the helpdesk and start the trigger (with an optional look-back)."""
    survey = _survey(survey_id)
    lookback = _lookback()
    if lookback is None:
        flash(f"Look back a whole number of days, 0 to {MAX_LOOKBACK_DAYS}.", "error")
    elif survey.active:
        flash("The trigger is already active.", "info")
    else:
        try:
            activate_survey(survey, lookback)
        except (ActivationFailed, MetricMissing, ValidationError, *TROUBLE) as exc:
            db.session.rollback()
            flash(f"The trigger was not activated. {exc}", "error")
        else:
            since = f" and the last {lookback} days" if lookback else ""
            flash(
                f"The trigger is active: tickets resolved from now on{since} get a survey "
                "once they are due.",
                "success",
            )
    return redirect(url_for("setup.survey", survey_id=survey.id))


@bp.post("/surveys/<int(max=2147483647):survey_id>/deactivate")
@admin_required
def deactivate(survey_id: int):
    """Stop the trigger; surveys not sent yet are cancelled."""
    survey = _survey(survey_id)
    cancelled = deactivate_survey(survey)
    flash(
        "The trigger is inactive."
        + (
            " "
            + ngettext(
                "%(num)d survey email not sent yet was cancelled.",
                "%(num)d survey emails not sent yet were cancelled.",
                cancelled,
            )
            if cancelled
            else ""
        ),
        "success",
    )
    return redirect(url_for("setup.survey", survey_id=survey.id))


@bp.get("/surveys/<int(max=2147483647):survey_id>/email-preview")
@admin_required
def email_preview(survey_id: int):
    """The survey email as a customer would get it, with the saved settings."""
    survey = _survey(survey_id)
    try:
        html = preview_email(survey).get_body(("html",)).get_content()
    except (MetricMissing, ValidationError) as exc:
        html = f"<p>No preview: {exc}</p>"
    response = current_app.response_class(html, mimetype="text/html")
    # Shown in a frame on the survey page only; its links are inert samples.
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
    )
    return response


@bp.route("/surveys/<int(max=2147483647):survey_id>/dry-run", methods=["GET", "POST"])
@admin_required
def dry_run(survey_id: int):
    """Which recent tickets would be surveyed, and why each other one would be skipped
    (the CLI's dry run; nothing is written or sent)."""
    survey = _survey(survey_id)
    decisions: list[tuple[Any, str | None]] = []
    report = None
    error = ""
    lookback = 7
    if request.method == "POST":
        lookback = _lookback()
        if lookback is None:
            error = f"Look back a whole number of days, 0 to {MAX_LOOKBACK_DAYS}."
            lookback = 7
        else:

            def collect(ticket, reason):
                if len(decisions) < PREVIEW_ROWS:
                    decisions.append((ticket, reason))

            try:
                report = scan_survey(
                    survey.id, dry_run=True, on_decision=collect, lookback_days=lookback
                )
            except (MetricMissing, ValidationError, *TROUBLE) as exc:
                error = f"The preview could not read the helpdesk: {exc}"
    return render_template(
        "setup/dry_run.html",
        survey=survey,
        decisions=decisions,
        report=report,
        error=error,
        lookback=lookback,
        max_lookback=MAX_LOOKBACK_DAYS,
        limit=PREVIEW_ROWS,
    )
