"""Sign-in, sign-out and the one-time page that creates the first admin."""

from __future__ import annotations

import math
import time
from urllib.parse import urlsplit

from flask import Blueprint
from flask import Flask
from flask import current_app
from flask import flash
from flask import make_response
from flask import redirect
from flask import render_template
from flask import request
from flask import url_for
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import current_user
from flask_login import login_required
from flask_login import login_user
from flask_login import logout_user
from flask_wtf import FlaskForm
from itsdangerous import BadSignature
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash
from wtforms import EmailField
from wtforms import PasswordField
from wtforms import StringField
from wtforms.validators import DataRequired
from wtforms.validators import EqualTo
from wtforms.validators import Length
from wtforms.validators import Regexp

from hub.config import signing_keys
from hub.extensions import db
from hub.models import Milestone
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from hub.models import dummy_password_hash
from hub.models import utcnow

bp = Blueprint("auth", __name__)

FIRST_ADMIN = "first-admin"
FIRST_ADMIN_SALT = "surveyhub:first-admin"
#: Sign-in attempts allowed per client address and per email address.
LOGIN_LIMIT = "10 per minute; 100 per day"
FIRST_ADMIN_MAX_AGE = 7 * 24 * 3600
MIN_PASSWORD_LENGTH = 10


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


class NewPasswordForm(FlaskForm):
    """A new password, typed twice (the first admin's, an invited agent's)."""

    password = PasswordField(
        "Password",
        validators=[
            DataRequired(),
            Length(min=MIN_PASSWORD_LENGTH, message="Use at least 10 characters."),
        ],
    )
    confirm = PasswordField(
        "Repeat password", validators=[EqualTo("password", message="Passwords differ.")]
    )


class FirstAdminForm(NewPasswordForm):
    name = StringField("Your name", validators=[DataRequired(), Length(max=200)])
    email = EmailField(
        "Email",
        validators=[
            DataRequired(),
            Length(max=320),
            Regexp(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", message="Enter an email address."),
        ],
    )


def _serializer(app: Flask) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(signing_keys(app), salt=FIRST_ADMIN_SALT)


def admin_exists() -> bool:
    """Whether any admin account exists (then the first-admin link stops working)."""
    query = select(func.count()).select_from(User).where(User.role == Role.ADMIN.value)
    return db.session.execute(query).scalar_one() > 0


def first_admin_url(app: Flask, base_url: str) -> str:
    """A signed link to create the first admin; it works until an admin exists."""
    return f"{base_url.rstrip('/')}/setup/{_serializer(app).dumps('first-admin')}"


@bp.route("/setup/<token>", methods=["GET", "POST"])
def first_admin(token: str):
    """Create the first admin account from the link `surveyhub run` printed."""
    try:
        _serializer(current_app).loads(token, max_age=FIRST_ADMIN_MAX_AGE)
    except BadSignature:
        return render_template("auth/setup_invalid.html"), 404
    if admin_exists():
        return render_template("auth/setup_done.html"), 410
    form = FirstAdminForm()
    if form.validate_on_submit():
        user = User(
            email=_printable(form.email.data).strip().lower(),
            name=_printable(form.name.data).strip(),
            role=Role.ADMIN.value,
            status=UserStatus.ACTIVE.value,
        )
        user.set_password(form.password.data)
        # The milestone's unique key lets one of several concurrent posts through.
        db.session.add_all([Milestone(key=FIRST_ADMIN), user])
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            return render_template("auth/setup_done.html"), 410
        login_user(user)
        flash("Your admin account is ready.", "success")
        return redirect(url_for("home.index"))
    return render_template("auth/setup.html", form=form)


def _login_email() -> str:
    return "login-email:" + _printable(request.form.get("email") or "").strip().lower()[:320]


def _printable(text: str) -> str:
    """`text` without control characters (NUL cannot even be stored in PostgreSQL)."""
    return "".join(ch for ch in text if ch.isprintable())


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with email and password (guesses are limited per client and per email
    address)."""
    if current_user.is_authenticated:
        return redirect(url_for("home.index"))
    form = LoginForm()
    if request.method == "POST":
        limiter = current_app.extensions["hub"].limiter
        # Two statements on two lines: Flask-Limiter files a limit used this way under
        # its call site, so each needs its own.
        with limiter.limit(LOGIN_LIMIT, key_func=get_remote_address, scope="login-client"):  # noqa: SIM117
            with limiter.limit(LOGIN_LIMIT, key_func=_login_email, scope="login-email"):
                return _sign_in(form)
    return render_template("auth/login.html", form=form, no_admin=not admin_exists())


def _sign_in(form: LoginForm):
    if form.validate_on_submit():
        email = _printable(form.email.data).strip().lower()
        user = db.session.execute(select(User).where(User.email == email)).scalar_one_or_none()
        if user is None:
            # The same work as for a real account: the answer's timing must not tell
            # which addresses have one.
            check_password_hash(dummy_password_hash(), form.password.data)
            flash("That email and password do not match an account.", "error")
        elif not user.check_password(form.password.data):
            flash("That email and password do not match an account.", "error")
        elif not user.is_active:
            flash("This account is not active. Ask an admin to restore it.", "error")
        else:
            user.last_login_at = utcnow()
            db.session.commit()
            login_user(user)
            return redirect(_safe_next(request.args.get("next")) or url_for("home.index"))
    return render_template("auth/login.html", form=form, no_admin=not admin_exists())


@bp.errorhandler(RateLimitExceeded)
def too_many_attempts(error: RateLimitExceeded):
    limit = getattr(current_app.extensions["hub"].limiter, "current_limit", None)
    reset_at = limit.reset_at if limit is not None else time.time() + 60
    minutes = max(1, math.ceil((reset_at - time.time()) / 60))
    wait = "a minute" if minutes == 1 else f"{minutes} minutes"
    flash(f"Too many sign-in attempts. Try again in {wait}.", "error")
    response = make_response(render_template("auth/login.html", form=LoginForm()), 429)
    response.headers["Retry-After"] = str(minutes * 60)
    return response


@bp.post("/logout")
@login_required
def logout():
    """Sign out everywhere (a POST, so a link elsewhere cannot sign people out): every
    session cookie of the user stops working, copies included."""
    current_user.end_sessions()
    db.session.commit()
    logout_user()
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))


def _safe_next(target: str | None) -> str | None:
    # Only same-site paths: an open redirect after login is a phishing aid. Browsers
    # drop tabs and newlines and read "\\" as "/", so "/\t/evil.com" means "//evil.com".
    if not target or any(ch in target for ch in "\\\t\r\n") or not target.startswith("/"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return None
    return target
