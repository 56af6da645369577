"""The page an invited agent opens from the email: set a password, then sign in."""

from __future__ import annotations

from flask import Blueprint
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from flask_login import logout_user

from hub.invitations import InviteInvalid
from hub.invitations import accept
from hub.invitations import read_invite
from hub.web.auth import NewPasswordForm

bp = Blueprint("invitations", __name__)


@bp.route("/invite/<token>", methods=["GET", "POST"])
def set_password(token: str):
    """Set a password from an invitation link (single use, seven days)."""
    try:
        user = read_invite(token)
    except InviteInvalid:
        return render_template("auth/invite_invalid.html"), 404
    form = NewPasswordForm()
    if form.validate_on_submit():
        accept(user, form.password.data)
        logout_user()  # whoever was signed in on this browser, the new account signs in fresh
        flash("Your password is set. Sign in with your email address.", "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/invite.html", form=form, user=user)
