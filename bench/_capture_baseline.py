"""The hand-written baseline of `bench/capture_rps.py` (the floor a framework allows),
served by gunicorn with the hub's own settings (`gunicorn.conf.py`) beside the hub and
the hello-world route (`bench/_capture_hello.py`).

`floor` answers the rating link as a minimal hand-written Flask app would. GET: the same
token check as the hub (itsdangerous, the same salt and key), one SQL lookup (the
delivery and its survey), the expiry check and the same template (`public/rate.html`,
in the customer's language). POST: the same token check, one SQL lookup (the delivery,
its survey and any rating), the rating inserted (or changed within 15 minutes) and its
write-back row staged in one transaction, then the same 303 to the comment page. It has
no webhook outbox, plugin hooks, scanner heuristics, opened-time, sessions, CSRF, rate
limiter or metrics: what the hub adds on top is what the benchmark weighs.

One psycopg connection per worker process (opened at its first request, in autocommit:
a lookup is one round trip). NPS surveys only (the benchmark's survey).
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path

import psycopg
from babel.support import Translations
from flask import Flask
from flask import Response
from flask import g
from flask import redirect
from flask import render_template
from itsdangerous import BadSignature
from itsdangerous import URLSafeTimedSerializer

from hub.surveys import text_color_on

ROOT = Path(__file__).resolve().parent.parent
RULE = "/r/<token>/<int(signed=True):score>"

floor = Flask("floor", template_folder=str(ROOT / "templates"), static_folder=None)
SERIALIZER = URLSafeTimedSerializer(
    [os.environ.get("HUB_SECRET_KEY", "unset")], salt="surveyhub:rating"
)
TOKEN = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+){1,3}")
LABELS = {0: "Not at all likely", 10: "Extremely likely"}
LANGUAGES = ("en", "de")
CATALOGS = {
    language: Translations.load(str(ROOT / "hub" / "translations"), [language])
    for language in LANGUAGES
}
VIEW = (
    "SELECT d.locale, s.scale, s.settings FROM deliveries d "
    "JOIN surveys s ON s.id = d.survey_id WHERE d.id = %s"
)
ANSWER = (
    "SELECT d.survey_id, d.agent_ref, d.locale, s.scale, s.settings, r.id, r.value, "
    "r.created_at FROM deliveries d JOIN surveys s ON s.id = d.survey_id "
    "LEFT JOIN ratings r ON r.delivery_id = d.id WHERE d.id = %s"
)
GRACE = timedelta(seconds=float(os.environ.get("HUB_WRITEBACK_GRACE") or 120))
CHANGE_WINDOW = timedelta(minutes=15)

floor.jinja_env.add_extension("jinja2.ext.i18n")
floor.jinja_env.install_gettext_callables(
    gettext=lambda s: CATALOGS[g.locale].ugettext(s),
    ngettext=lambda s, p, n: CATALOGS[g.locale].ungettext(s, p, n),
    newstyle=True,
)
floor.jinja_env.globals.update(
    csp_nonce=lambda: g.nonce,
    current_locale=lambda: g.locale,
)
_connection: psycopg.Connection | None = None


def database() -> psycopg.Connection:
    global _connection
    if _connection is None or _connection.closed:
        url = os.environ["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
        _connection = psycopg.connect(url, autocommit=True)
    return _connection


class Point:
    def __init__(self, value: int) -> None:
        self.value = value
        self.label = LABELS.get(value, str(value))


def check_token(token: str) -> tuple[int, datetime] | None:
    if len(token) > 200 or not TOKEN.fullmatch(token):
        return None
    try:
        delivery_id, issued_at = SERIALIZER.loads(token, return_timestamp=True)
    except BadSignature:
        return None
    return (delivery_id, issued_at) if isinstance(delivery_id, int) else None


def dress(settings: dict, locale: str | None, issued_at: datetime) -> bool:
    """The page's language and brand; whether the link is still open."""
    language = settings.get("language") or "auto"
    if language == "auto":
        language = (locale or "").replace("-", "_").split("_")[0].lower()
    g.locale = language if language in LANGUAGES else "en"
    g.brand_color = settings.get("brand_color") or "#2f5bea"
    g.brand_text = text_color_on(g.brand_color)
    g.company = settings.get("company_name") or "our team"
    g.nonce = secrets.token_urlsafe(16)
    expiry = timedelta(days=settings.get("link_expiry_days") or 30)
    return datetime.now(UTC) - issued_at <= expiry


def page(body: str, status: int = 200) -> Response:
    response = Response(body, status=status)
    headers = response.headers
    headers["Cache-Control"] = "no-store"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'self' 'nonce-{g.get('nonce', '')}'; "
        "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    )
    return response


@floor.get(RULE)
def rate(token: str, score: int) -> Response:
    checked = check_token(token)
    if checked is None:
        return page("This link is not valid.", 404)
    row = database().execute(VIEW, (checked[0],)).fetchone()
    if row is None:
        return page("This link is not valid.", 404)
    locale, scale, settings = row
    if not dress(settings or {}, locale, checked[1]):
        return page("This survey is closed.", 410)
    if not 0 <= score < scale:
        return page("That score is not on this survey.", 400)
    return page(render_template("public/rate.html", point=Point(score)))


@floor.post(RULE)
def record(token: str, score: int) -> Response:
    checked = check_token(token)
    if checked is None:
        return page("This link is not valid.", 404)
    now = datetime.now(UTC)
    connection = database()
    with connection.transaction():
        row = connection.execute(ANSWER, (checked[0],)).fetchone()
        if row is None:
            return page("This link is not valid.", 404)
        survey_id, agent_ref, locale, scale, settings, rating_id, value, created_at = row
        if not dress(settings or {}, locale, checked[1]):
            return page("This survey is closed.", 410)
        if not 0 <= score < scale:
            return page("That score is not on this survey.", 400)
        if rating_id is None:
            rating_id = connection.execute(
                "INSERT INTO ratings (delivery_id, survey_id, agent_ref, value, scale, comment, "
                "suspected_scanner, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, '', false, %s, %s) RETURNING id",
                (checked[0], survey_id, agent_ref, score, scale, now, now),
            ).fetchone()[0]
        elif value == score:
            return redirect(f"/r/{token}/comment", code=303)
        elif now - created_at > CHANGE_WINDOW:
            return page("Your answer was already recorded.", 409)
        else:
            connection.execute(
                "UPDATE ratings SET value = %s, updated_at = %s WHERE id = %s",
                (score, now, rating_id),
            )
        connection.execute(
            "INSERT INTO write_backs (rating_id, kind, state, attempts, last_error, "
            "next_attempt_at, created_at, updated_at) "
            "VALUES (%s, 'score', 'pending', 0, '', %s, %s, %s) "
            "ON CONFLICT (rating_id) WHERE state = 'pending' "
            "DO UPDATE SET updated_at = excluded.updated_at",
            (rating_id, now + GRACE, now, now),
        )
    return redirect(f"/r/{token}/comment", code=303)
