"""The admin's Operations and Plugins pages, with retrying failed jobs and checking
connections."""

from __future__ import annotations

from flask import Blueprint
from flask import abort
from flask import current_app
from flask import flash
from flask import redirect
from flask import render_template
from flask import url_for
from redis.exceptions import RedisError

from hub import operations
from hub.extensions import db
from hub.models import Connection
from hub.observability import connection_label
from hub.observability import counts_from_database
from hub.web.access import admin_required

bp = Blueprint("operations", __name__)


@bp.get("/operations")
@admin_required
def index():
    """Queues, workers, the scheduler, surveys' scans, failed jobs and connections."""
    registry = current_app.extensions["hub"].registry
    return render_template(
        "operations/index.html",
        redis=operations.redis_state(),
        counts=counts_from_database(),
        usage=operations.process_usage(),
        connection_label=connection_label,
        surveys=operations.surveys(),
        connections=operations.connection_health(registry),
        metrics=registry.metrics,
        ago=operations.ago,
        alive_seconds=operations.WORKER_ALIVE_SECONDS,
    )


@bp.post("/operations/jobs/<job_id>/retry")
@admin_required
def retry_job(job_id: str):
    """Put one failed job back on its queue."""
    if not operations.JOB_ID.fullmatch(job_id):
        abort(404)
    try:
        queue = operations.retry_failed_job(job_id)
    except RedisError:
        flash("Redis is not reachable, so the job could not be retried.", "error")
        return redirect(url_for(".index", _anchor="failed-jobs"))
    if queue is None:
        flash(f"The job {job_id} is no longer in a failed list (retried or expired).", "warning")
    else:
        flash(f"The job {job_id} is back on the queue '{queue}'.", "success")
    return redirect(url_for(".index", _anchor="failed-jobs"))


@bp.post("/connections/<int(max=2147483647):connection_id>/check")
@admin_required
def check_connection(connection_id: int):
    """Check a connection's credentials now and store the outcome."""
    connection = db.session.get(Connection, connection_id)
    if connection is None:
        abort(404)
    if operations.check_connection(connection):
        flash(f"The connection '{connection.name}' works.", "success")
    else:
        flash(f"The connection '{connection.name}' has a problem: see below.", "error")
    return redirect(url_for(".index", _anchor=f"connection-{connection.id}"))


@bp.get("/plugins")
@admin_required
def plugins():
    """Every loaded plugin, what it registers, the blocked ones, and how to add one."""
    registry = current_app.extensions["hub"].registry
    overview = operations.plugin_overview(
        registry, list(current_app.config.get("HUB_DISABLED_PLUGINS") or ())
    )
    return render_template("operations/plugins.html", overview=overview)
