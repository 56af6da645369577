"""The hub's web UI and endpoints, mounted by `register_web()`."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint
from flask import Flask
from flask import render_template
from flask_babel import get_locale
from flask_wtf.csrf import CSRFError

from hub.api import init_api
from hub.api import is_api_request
from hub.api.problems import from_http_exception
from hub.extensions import db
from hub.extensions import login_manager
from hub.models import User

#: The vendored CSS framework (Pico CSS, MIT) and the hub's own stylesheet.
STATIC_DIR = str(Path(__file__).resolve().parent.parent / "static")


def register_web(app: Flask) -> None:
    """Mount the hub's blueprints, login handling and friendly error pages."""
    from hub.web.api_reference import bp as api_reference_bp
    from hub.web.auth import bp as auth_bp
    from hub.web.customers import mount_customer_pages
    from hub.web.deliveries import bp as deliveries_bp
    from hub.web.health import bp as health_bp
    from hub.web.home import bp as home_bp
    from hub.web.invitations import bp as invitations_bp
    from hub.web.metrics import bp as metrics_bp
    from hub.web.metrics import init_request_metrics
    from hub.web.operations import bp as operations_bp
    from hub.web.outbox import bp as outbox_bp
    from hub.web.people import bp as people_bp
    from hub.web.reports import bp as reports_bp
    from hub.web.security import init_security
    from hub.web.setup import bp as setup_bp
    from hub.web.tokens import bp as tokens_bp
    from hub.web.webhooks import bp as webhooks_bp

    init_security(app)

    app.register_blueprint(
        Blueprint("assets", __name__, static_folder=STATIC_DIR, static_url_path="/static")
    )

    app.register_blueprint(health_bp)
    app.register_blueprint(metrics_bp)
    init_request_metrics(app)
    app.register_blueprint(auth_bp)
    app.register_blueprint(home_bp)
    # The customers' pages (/r/, /u/) run on a lean app of their own in front of this one.
    mount_customer_pages(app)
    app.register_blueprint(outbox_bp)
    app.register_blueprint(setup_bp)
    app.register_blueprint(invitations_bp)
    app.register_blueprint(reports_bp)
    app.register_blueprint(deliveries_bp)
    app.register_blueprint(operations_bp)
    app.register_blueprint(tokens_bp)
    app.register_blueprint(api_reference_bp)
    app.register_blueprint(webhooks_bp)
    app.register_blueprint(people_bp)

    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to continue."
    login_manager.login_message_category = "info"

    @app.context_processor
    def menu():
        registry = app.extensions["hub"].registry
        return {
            "config_metrics": lambda: list(registry.metrics.values()),
            "current_locale": lambda: str(get_locale()),
            "has_endpoint": lambda endpoint: endpoint in app.view_functions,
        }

    @app.template_filter("when")
    def when(moment) -> str:
        """A stored time as the pages show it (UTC), or "never"."""
        return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "never"

    @login_manager.user_loader
    def load_user(user_id: str) -> User | None:
        # "<id>:<session version>": a cookie from before a sign-out no longer matches.
        number, _, version = user_id.partition(":")
        if not (number.isdigit() and version.isdigit()):
            return None
        user = db.session.get(User, int(number))
        if user is None or user.session_version != int(version):
            return None
        return user

    @app.errorhandler(403)
    def forbidden(error):
        return render_template("errors/403.html"), 403

    @app.errorhandler(404)
    def not_found(error):
        if is_api_request():
            return from_http_exception(error)
        return render_template("errors/404.html"), 404

    @app.errorhandler(405)
    def wrong_method(error):
        if is_api_request():
            return from_http_exception(error)
        return error

    @app.errorhandler(CSRFError)
    def csrf_failed(error):
        return render_template("errors/400.html", reason=error.description), 400

    @app.errorhandler(500)
    def server_error(error):
        if is_api_request():
            return from_http_exception(error)
        return render_template("errors/500.html"), 500

    init_api(app)
