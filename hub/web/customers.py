"""The customers' pages (rating, comment, thank-you, unsubscribe) on a lean app of their own.

Every click in a survey email lands on these pages, so they are the hub's busiest and
must cost little. The hub's own app carries the admin stack on every request: the
sign-in cookie and Flask-Login, CSRF protection, the rate limiter's hooks and the admin
pages' context processors. None of it applies to a customer holding a signed link, and
together it cost more per request than the page itself (docs/performance.md, "Rating
capture").

`mount_customer_pages(hub)` builds a second Flask app that shares the hub's config,
extensions (plugin registry, key vault, Flask-Babel's settings) and database engines
(one connection pool per process), registers only the customers' blueprint, and puts a
dispatcher in front of the hub's `wsgi_app` that sends `/r/…` and `/u/…` to it. Anything
that calls the hub's app (gunicorn, the test client) reaches the customers' pages
through it.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable

from babel.support import NullTranslations
from flask import Flask
from flask import Request
from flask import Response
from flask import g
from flask import render_template
from flask.sessions import SessionInterface
from flask.sessions import SessionMixin
from flask_babel import get_translations
from werkzeug.exceptions import HTTPException
from werkzeug.exceptions import RequestEntityTooLarge

from hub.extensions import db
from hub.i18n import DEFAULT_LANGUAGE

#: Paths served by the customers' app (PATH_INFO is already percent-decoded).
CUSTOMER_PREFIXES = ("/r/", "/u/")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class NoSessions(SessionInterface):
    """No session cookie: a customer's page needs none (the link is the credential),
    and reading and signing one was a few percent of the rating page."""

    def open_session(self, app: Flask, request: Request) -> None:
        return None  # Flask then uses a null session, which is never saved

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


class CustomerDispatcher:
    """WSGI middleware: the customers' paths to their app, the rest to the hub's."""

    def __init__(self, customers: WSGIApp, hub: WSGIApp) -> None:
        self.customers = customers
        self.hub = hub

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "").startswith(CUSTOMER_PREFIXES):
            return self.customers(environ, start_response)
        return self.hub(environ, start_response)


class Catalogs:
    """The jinja gettext callables of the customers' pages: each language's catalog is
    looked up once per process, not once per string (the rating page has about twenty;
    Flask-Babel resolves the request's locale and its catalog for each)."""

    def __init__(self) -> None:
        self.loaded: dict[str, NullTranslations] = {}

    def catalog(self) -> NullTranslations:
        language = g.get("locale")  # the view's choice (hub.web.public._dress)
        if not language:
            return get_translations()
        catalog = self.loaded.get(language)
        if catalog is None:
            catalog = self.loaded[language] = get_translations()
        return catalog

    def gettext(self, message: str) -> str:
        # Jinja's i18n extension ("newstyle") fills in the %(name)s variables itself.
        return self.catalog().ugettext(message)

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self.catalog().ungettext(singular, plural, n)


def _current_locale() -> str:
    return str(g.get("locale") or DEFAULT_LANGUAGE)


def create_customer_app(hub: Flask) -> Flask:
    """The customers' app, sharing the hub's config, extensions and database engines."""
    from hub.web.metrics import init_request_metrics
    from hub.web.public import bp as public_bp
    from hub.web.public import private_page
    from hub.web.security import add_security_headers
    from hub.web.security import csp_nonce
    from hub.web.security import limit_body

    app = Flask(
        hub.import_name,
        root_path=hub.root_path,
        instance_path=hub.instance_path,
        template_folder=hub.template_folder,
        static_folder=None,
    )
    app.config = hub.config
    app.session_interface = NoSessions()
    app.extensions = hub.extensions
    db.share_engines(app, hub)
    app.jinja_env.add_extension("jinja2.ext.i18n")
    catalogs = Catalogs()
    app.jinja_env.install_gettext_callables(catalogs.gettext, catalogs.ngettext, newstyle=True)  # type: ignore[attr-defined]
    app.jinja_env.globals.update(csp_nonce=csp_nonce, current_locale=_current_locale)

    app.before_request(limit_body)
    # Every answer of this app is a customer's page whose URL is their credential.
    app.after_request(add_security_headers)
    app.after_request(private_page)
    init_request_metrics(app)
    app.register_blueprint(public_bp)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        return render_template("errors/413.html"), 413

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 404:
            # A mistyped or truncated link from an email: the customers' own page.
            return render_template("public/link_invalid.html"), 404
        return error

    @app.errorhandler(500)
    def server_error(error):
        return render_template("public/unavailable.html"), 500

    return app


def mount_customer_pages(hub: Flask) -> Flask:
    """Serve the customers' pages from their own app in front of the hub's; that app."""
    customers = create_customer_app(hub)
    hub.wsgi_app = CustomerDispatcher(customers.wsgi_app, hub.wsgi_app)  # type: ignore[method-assign]
    hub.extensions["hub.customers"] = customers
    return customers
