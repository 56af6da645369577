"""The Outbox: emails the local SMTP sink received (shown when `surveyhub run` has no SMTP)."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import render_template
from flask_login import current_user
from flask_login import login_required

from hub.smtp_sink import list_messages
from hub.smtp_sink import read_message

bp = Blueprint("outbox", __name__, url_prefix="/outbox")


def _folder() -> Path:
    folder = current_app.config.get("OUTBOX_DIR")
    if not folder or not current_user.is_admin:
        abort(404)
    return Path(folder)


@bp.get("/")
@login_required
def index():
    """Every email the local sink caught, newest first."""
    return render_template("outbox/index.html", messages=list_messages(_folder()))


@bp.get("/<name>")
@login_required
def show(name: str):
    """One email: headers, the HTML part (sandboxed) and the plain-text part."""
    message = read_message(_folder(), name)
    if message is None:
        abort(404)
    # Links in the preview open a new tab: inside the sandboxed frame the rating page
    # could not submit its form.
    preview = '<base target="_blank">' + message.html
    return render_template("outbox/show.html", item=message, preview=preview)
