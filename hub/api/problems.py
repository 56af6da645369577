"""Errors of the REST API as `application/problem+json` (RFC 9457)."""

from __future__ import annotations

import math
import time
from typing import Any

from flask import Response
from flask import current_app
from flask import json
from werkzeug.exceptions import HTTPException

PROBLEM = "application/problem+json"


def problem(
    status: int, title: str, detail: str = "", errors: dict[str, Any] | None = None, **headers
) -> Response:
    """A problem document: `status`, `title`, an optional `detail` and, for invalid input,
    `errors` (field name → messages, as marshmallow gives them)."""
    body: dict[str, Any] = {"type": "about:blank", "status": status, "title": title}
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    response.headers.update(headers)
    return response


def from_http_exception(error: HTTPException) -> Response:
    """An HTTP error (flask-smorest's `abort`, webargs' 422, Flask's 404…) as a problem."""
    if error.response is not None:  # a problem made already (hub.api.auth)
        return error.response
    data = getattr(error, "data", None) or {}
    errors = data.get("errors") or data.get("messages")
    if isinstance(errors, dict) and set(errors) <= {"json", "query", "path", "form"}:
        # webargs keys messages by location; one level is enough for a reader.
        merged: dict[str, Any] = {}
        for messages in errors.values():
            merged.update(messages if isinstance(messages, dict) else {"_": messages})
        errors = merged
    detail = data.get("message") or (error.description if error.code != 422 else "")
    if error.code == 422 and not detail:
        detail = "Some values are not valid; see errors."
    headers = dict(data.get("headers") or {})
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    if error.code == 429:
        limit = getattr(current_app.extensions["hub"].limiter, "current_limit", None)
        wait = max(1, math.ceil(limit.reset_at - time.time())) if limit is not None else 60
        headers["Retry-After"] = str(wait)
        detail = f"Too many requests with this token; try again in {wait} seconds."
    return problem(error.code or 500, error.name, detail, errors, **headers)
