"""Who calls the API: a personal token in `Authorization: Bearer …`, and its scope."""

from __future__ import annotations

from flask import g
from flask import request
from werkzeug.exceptions import HTTPException

from hub.api.problems import problem
from hub.models import ApiToken
from hub.tokens import find_token

#: Methods that change something, and so need the `write` scope.
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


class ApiError(HTTPException):
    """An API failure with a ready problem response."""

    def __init__(self, response) -> None:
        super().__init__(response=response)
        self.code = response.status_code


def authenticate() -> None:
    """Before every API view: find the token, refuse without a live one (401) or
    without the scope the method needs (403)."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    row: ApiToken | None = None
    if scheme.lower() == "bearer" and value.strip():
        row = find_token(value.strip())
    if row is None:
        raise ApiError(
            problem(
                401,
                "Unauthorized",
                "Send a live personal API token as 'Authorization: Bearer shub_…' "
                "(create one on the API tokens page).",
                **{"WWW-Authenticate": 'Bearer realm="surveyhub"'},
            )
        )
    if request.method in WRITES and row.scope != "write":
        raise ApiError(problem(403, "Forbidden", "This token may only read (scope 'read')."))
    g.api_token = row
    g.api_user = row.user
