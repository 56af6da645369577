"""What every API resource shares: a blueprint that authenticates and answers
problem+json, the admin-only check and loading a survey or answering 404."""

from __future__ import annotations

import base64
from typing import Any

from flask import g
from flask_smorest import Blueprint
from flask_smorest import abort
from werkzeug.exceptions import HTTPException

from hub.api.auth import authenticate
from hub.api.problems import from_http_exception
from hub.extensions import csrf
from hub.extensions import db
from hub.models import Survey


def api_blueprint(name: str, url_prefix: str, description: str) -> Blueprint:
    """A blueprint under /api/v1 whose views need a token and whose errors are problems;
    list it in `hub.api.BLUEPRINT_MODULES`' module as `BLUEPRINTS`."""
    blueprint = Blueprint(name, "hub.api", url_prefix=url_prefix, description=description)
    blueprint.before_request(authenticate)
    blueprint.register_error_handler(HTTPException, from_http_exception)
    csrf.exempt(blueprint)  # a token, not a cookie, authenticates: no CSRF to guard
    return blueprint


def admin_only(what: str = "this") -> None:
    """Refuse (403) unless the token's user is an admin."""
    if not g.api_user.is_admin:
        abort(403, message=f"Only an admin's token may use {what}; agents see their ratings.")


def survey_or_404(survey_id: int) -> Survey:
    """The survey, or a 404 problem."""
    survey = db.session.get(Survey, survey_id)
    if survey is None:
        abort(404, message=f"There is no survey {survey_id}.")
    return survey


def page_cursor(last_id: int, kind: str = "r") -> str:
    """An opaque cursor that continues after the row `last_id` (of a `kind` of list)."""
    return base64.urlsafe_b64encode(f"{kind}{last_id}".encode()).decode().rstrip("=")


def read_cursor(cursor: str, kind: str = "r") -> int:
    """The id a cursor of this `kind` continues after; 422 for one this API did not give."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raw = ""
    digits = raw[len(kind) :]
    if not raw.startswith(kind) or not digits.isascii() or not digits.isdigit():
        abort(422, message="The cursor is not one this API gave.", errors={"cursor": ["bad"]})
    if int(digits) > 2**63 - 1:
        abort(422, message="The cursor is not one this API gave.", errors={"cursor": ["bad"]})
    return int(digits)


def stream_doc(content_type: str, description: str) -> dict[str, Any]:
    """The OpenAPI `responses` of a streamed download (text, no JSON schema)."""
    return {
        "200": {
            "description": description,
            "content": {content_type: {"schema": {"type": "string"}}},
        }
    }
