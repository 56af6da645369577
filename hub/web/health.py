"""Liveness (`/healthz`) and readiness (`/readyz`) endpoints for load balancers and ops."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint
from flask import current_app
from flask import jsonify

from hub.extensions import csrf
from hub.health import ServiceUnavailable
from hub.health import check_database
from hub.health import check_redis
from hub.jobs import HEARTBEAT_KEY
from hub.jobs import redis_connection
from hub.models import utcnow

bp = Blueprint("health", __name__)
csrf.exempt(bp)


@bp.get("/healthz")
def healthz():
    """The web process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """The database and Redis answer; 503 names the one that does not.

    The endpoint is public, so the reason (hosts, users, driver errors) goes to the log,
    not into the answer.
    """
    app = current_app._get_current_object()
    checks: dict[str, str] = {}
    for name, check in (("database", check_database), ("redis", check_redis)):
        try:
            check(app)
            checks[name] = "ok"
        except ServiceUnavailable as exc:
            app.logger.warning("readyz: %s", exc)
            checks[name] = "unavailable"
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    if checks["redis"] == "ok":
        body["last_worker_heartbeat_seconds_ago"] = _heartbeat_age()
    return jsonify(body), 200 if ready else 503


def _heartbeat_age() -> float | None:
    raw = redis_connection().get(HEARTBEAT_KEY)
    if raw is None:
        return None
    return round((utcnow() - datetime.fromisoformat(raw.decode())).total_seconds(), 1)
