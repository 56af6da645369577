"""The API tokens page: each person makes, lists and revokes their own tokens."""

from __future__ import annotations

from flask import Blueprint
from flask import abort
from flask import flash
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_login import current_user
from flask_login import login_required
from sqlalchemy import select

from hub.extensions import db
from hub.models import ApiToken
from hub.tokens import SCOPES
from hub.tokens import create_token
from hub.tokens import revoke

bp = Blueprint("tokens", __name__)


def _mine() -> list[ApiToken]:
    query = select(ApiToken).where(ApiToken.user_id == current_user.id).order_by(ApiToken.id)
    return list(db.session.execute(query).scalars())


@bp.route("/api-tokens", methods=["GET", "POST"])
@login_required
def index():
    """List the signed-in person's tokens; POST makes one and shows it this once."""
    error = ""
    token = None
    name = ""
    if request.method == "POST":
        name = "".join(ch for ch in request.form.get("name", "") if ch.isprintable()).strip()
        scope = request.form.get("scope", "read")
        if not name or len(name) > 100:
            error = "Name the token (up to 100 characters), e.g. “BI export”."
        elif scope not in SCOPES:
            error = "Choose read or write."
        else:
            _, token = create_token(current_user, name, scope)
            name = ""
    return render_template(
        "tokens/index.html", tokens=_mine(), token=token, error=error, name=name
    ), (422 if error else 200)


@bp.post("/api-tokens/<int(max=2147483647):token_id>/revoke")
@login_required
def revoke_token(token_id: int):
    """Revoke one of the signed-in person's tokens."""
    row = db.session.get(ApiToken, token_id)
    if row is None or row.user_id != current_user.id:
        abort(404)
    revoke(row)
    flash(f"The token “{row.name}” (shub_{row.prefix}_…) no longer works.", "success")
    return redirect(url_for("tokens.index"))
