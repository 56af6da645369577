"""The People page: erasing a customer's data on request (admins), with a confirmation
step that shows what will go, and the record of past erasures."""

from __future__ import annotations

from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from sqlalchemy import select

from hub.erasure import ACTION
from hub.erasure import AddressOfHubUser
from hub.erasure import InvalidAddress
from hub.erasure import erase_person
from hub.erasure import find
from hub.extensions import db
from hub.models import AuditEntry
from hub.web.access import admin_required

bp = Blueprint("people", __name__, url_prefix="/people")

#: Past erasures the page lists.
RECENT = 50


def _recent() -> list[AuditEntry]:
    query = (
        select(AuditEntry)
        .where(AuditEntry.action == ACTION)
        .order_by(AuditEntry.id.desc())
        .limit(RECENT)
    )
    return list(db.session.execute(query).scalars())


def _page(email: str = "", error: str = "", status: int = 200):
    return render_template(
        "people/index.html", email=email, error=error, erasures=_recent()
    ), status


def _clean(value: str) -> str:
    return "".join(ch for ch in value if ch.isprintable()).strip()[:320]


@bp.get("/")
@admin_required
def index():
    """The erase form and the past erasures."""
    return _page()


@bp.post("/")
@admin_required
def confirm():
    """Step one: what the hub holds of the address, and a button to erase it."""
    email = _clean(request.form.get("email", ""))
    try:
        found = find(email)
    except InvalidAddress as exc:
        return _page(email, str(exc), 422)
    except AddressOfHubUser as exc:
        return _page(email, str(exc), 409)
    return render_template("people/confirm.html", email=email, found=found)


@bp.post("/erase")
@admin_required
def erase():
    """Step two: erase the address, then say what went."""
    email = _clean(request.form.get("email", ""))
    try:
        erasure = erase_person(email, current_user)
    except InvalidAddress as exc:
        return _page(email, str(exc), 422)
    except AddressOfHubUser as exc:
        return _page(email, str(exc), 409)
    found = erasure.found
    message = (
        f"Erased: {found.deliveries} deliveries, {found.ratings} ratings "
        f"({found.comments} with a comment). The address stays unsubscribed."
    )
    if found.helpdesk_tickets:
        message += (
            f" The hub's values in {found.helpdesk_tickets} helpdesk tickets are being "
            "removed; see the list below."
        )
    flash(message, "success")
    return redirect(url_for("people.index"))
