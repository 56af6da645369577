"""Request size limits, cookie flags and security headers for every page."""

from __future__ import annotations

import secrets

from flask import Flask
from flask import Response
from flask import g
from flask import jsonify
from flask import render_template
from flask import request
from flask_login import current_user
from werkzeug.exceptions import RequestEntityTooLarge

#: Any request to the hub (admin forms included).
MAX_BODY = 2 * 1024 * 1024
#: Public pages (score, comment, unsubscribe): a 5,000-character comment, form-encoded.
MAX_PUBLIC_BODY = 64 * 1024
#: Helpdesk webhooks: an event carries the whole conversation (Kustomer caps its own
#: hooks at 400 kB).
MAX_WEBHOOK_BODY = 1024 * 1024


def csp_nonce() -> str:
    """This response's nonce for inline scripts (the rating page's auto-submit)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def limit_body() -> None:
    """Refuse a declared body over the limit of its page before anything reads it."""
    endpoint = request.endpoint or ""
    if endpoint.startswith("public."):
        request.max_content_length = MAX_PUBLIC_BODY
    elif request.path.startswith("/hooks/"):
        request.max_content_length = MAX_WEBHOOK_BODY
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()


def add_security_headers(response: Response) -> Response:
    """Content-Security-Policy (with this response's script nonce), no sniffing, no
    framing; signed-in pages are not cached."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    script = f"'self' 'nonce-{g.csp_nonce}'" if "csp_nonce" in g else "'self'"
    headers.setdefault(
        "Content-Security-Policy",
        f"default-src 'self'; script-src {script}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'; object-src 'none'",
    )
    if (
        "Cache-Control" not in headers  # the customers' pages set no-store themselves
        and response.mimetype == "text/html"
        and current_user.is_authenticated
    ):
        # Signed-in pages show customers' words and, once, new secrets (tokens,
        # webhook signing secrets): no browser or proxy cache keeps them.
        headers["Cache-Control"] = "no-store"
    return response


def init_security(app: Flask) -> None:
    """Limit body sizes, harden the session cookie and add security headers."""
    https = app.config.get("HUB_BASE_URL", "").startswith("https://")
    if app.config.get("MAX_CONTENT_LENGTH") is None:  # Flask's default is None: no limit
        app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=https,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=https,
    )
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    # First of all, before CSRF protection or anything else touches the body.
    app.before_request_funcs.setdefault(None, []).insert(0, limit_body)
    app.after_request(add_security_headers)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        if request.path.startswith("/hooks/"):
            return jsonify(error="the body is too large"), 413
        return render_template("errors/413.html"), 413
