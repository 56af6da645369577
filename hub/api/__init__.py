"""The REST API at /api/v1 (flask-smorest): resources, token auth, problem+json errors,
and the OpenAPI document generated from the marshmallow schemas."""

from __future__ import annotations

import hashlib
import http

from flask import Flask
from flask import request
from flask_limiter.util import get_remote_address
from flask_smorest import Api
from flask_smorest.utils import prepare_response

from hub.api.problems import PROBLEM
from hub.api.schemas import ProblemSchema
from hub.tokens import TOKEN

PREFIX = "/api/v1"
#: The modules whose `BLUEPRINTS` make up the API, in the order the document lists them.
MODULES = (
    "hub.api.surveys",
    "hub.api.connections",
    "hub.api.agents",
    "hub.api.ratings",
    "hub.api.deliveries",
    "hub.api.stats",
    "hub.api.people",
)
#: Requests one token (or, without one, one client address) may make.
API_RATE_LIMIT = "600 per minute"


class HubApi(Api):
    """flask-smorest's Api whose error pages stay inside the API: the web UI keeps its
    own HTML error pages."""

    #: Errors are RFC 9457 problems; the generated document says so for every status.
    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self):
        pass  # on the API's blueprints (hub.api.base) and for /api paths (hub.web)

    def _register_responses(self):
        # flask-smorest documents its own JSON errors; ours are problem+json.
        for status in http.HTTPStatus:
            response: dict = {"description": status.phrase}
            if not (100 <= status < 200) and status not in (204, 304):
                response["schema"] = self.ERROR_SCHEMA
            prepare_response(response, self.spec, PROBLEM)
            self.spec.components.response(status.name, response, lazy=True)
        response = {"description": "An error, as a problem", "schema": self.ERROR_SCHEMA}
        prepare_response(response, self.spec, PROBLEM)
        self.spec.components.response("DEFAULT_ERROR", response, lazy=True)


def is_api_request() -> bool:
    """Whether the current request is for the API (its errors are problem+json)."""
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def init_api(app: Flask) -> HubApi:
    """Mount the API and serve `/api/v1/openapi.json`."""
    from importlib import import_module

    app.config.setdefault("API_TITLE", "SurveyHub API")
    app.config.setdefault("API_VERSION", "v1")
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    app.config.setdefault("OPENAPI_URL_PREFIX", PREFIX)
    app.config.setdefault("OPENAPI_JSON_PATH", "openapi.json")
    app.config.setdefault(
        "API_SPEC_OPTIONS",
        {
            "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
            "security": [{"token": []}],
        },
    )
    api = HubApi(app)
    app.extensions["hub_api"] = api
    limiter = app.extensions["hub"].limiter
    limit = app.config.get("HUB_API_RATE_LIMIT") or API_RATE_LIMIT
    blueprints = [bp for name in MODULES for bp in import_module(name).BLUEPRINTS]
    for blueprint in blueprints:
        limiter.limit(limit, key_func=rate_key, scope="api")(blueprint)
        api.register_blueprint(blueprint)
    return api


def rate_key() -> str:
    """Whose requests a rate limit counts: the token's, else the client address's.

    Counted before the token is checked, so by a hash of the whole token: a forged token
    that copies someone's public prefix gets a bucket of its own, not their quota.
    """
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
    if TOKEN.fullmatch(presented):
        return f"api-token:{hashlib.sha256(presented.encode()).hexdigest()[:32]}"
    return f"api-client:{get_remote_address()}"
