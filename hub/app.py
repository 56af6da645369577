"""The application factory."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from redis import Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import Pool
from werkzeug.middleware.proxy_fix import ProxyFix

from hub.config import default_instance_path
from hub.config import load_config
from hub.config import load_or_create_secret
from hub.config import validate_config
from hub.crypto import Vault
from hub.extensions import csrf
from hub.extensions import db
from hub.extensions import login_manager
from hub.extensions import migrate
from hub.i18n import babel
from hub.i18n import select_locale
from hub.logs import configure_web_logging
from hub.registry import Registry

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Folder of packaged resources (`templates`, `migrations`).

    Installed from a wheel they sit inside the `hub` package; in a source checkout
    (and an editable install) they are the top-level folders beside `hub/`.
    """
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"SurveyHub's {name} folder is missing; reinstall the package.")


@dataclass
class HubState:
    """Per-app state kept in ``app.extensions["hub"]``."""

    registry: Registry
    vault: Vault
    limiter: Limiter | None = None
    redis: Redis | None = None


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Create the hub's Flask app from the environment, overridden by `config`."""
    config = dict(config or {})
    instance_path = Path(config.pop("INSTANCE_PATH", None) or default_instance_path())
    app = Flask(
        "hub",
        instance_path=str(instance_path),
        template_folder=str(resource_dir("templates")),
        static_folder=None,
    )
    app.config.update(load_config(os.environ, instance_path))
    app.config.update(config)
    if not app.config["SECRET_KEY"] and app.config.get("DEBUG"):
        # Development without HUB_SECRET_KEY: a generated key kept in the instance
        # folder, never an empty one (it also encrypts helpdesk secrets).
        app.config["SECRET_KEY"] = load_or_create_secret(instance_path)
    app.config["SECRET_KEY_FALLBACKS"] = list(app.config["HUB_OLD_SECRET_KEYS"])
    if not app.config["HUB_BASE_URL"] and (app.config.get("DEBUG") or app.config.get("TESTING")):
        app.config["HUB_BASE_URL"] = "http://localhost:5000"
    validate_config(app.config)
    if app.config["HUB_LOG_FORMAT"] == "json":
        configure_web_logging(app)  # one JSON object per line, as the workers write
    instance_path.mkdir(parents=True, exist_ok=True)
    _configure_database(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(resource_dir("migrations")))
    login_manager.init_app(app)
    csrf.init_app(app)
    app.config.setdefault("RATELIMIT_STORAGE_URI", limiter_storage(app.config["REDIS_URL"]))
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "surveyhub-limits")
    # A sliding window: no burst of twice the limit across a window's edge.
    app.config.setdefault("RATELIMIT_STRATEGY", "moving-window")
    # One limiter per app (Flask-Limiter keeps per-app settings such as the key prefix
    # on the instance). Only code that asks is limited (sign-in); counters live in
    # Redis, or in memory while Redis is away.
    limiter = Limiter(get_remote_address, app=app, default_limits=[])
    app.config.setdefault("BABEL_TRANSLATION_DIRECTORIES", str(PACKAGE_DIR / "translations"))
    babel.init_app(app, locale_selector=select_locale)

    registry = Registry.load(
        disabled=app.config["HUB_DISABLED_PLUGINS"], extra=app.config["HUB_PLUGINS"]
    )
    app.extensions["hub"] = HubState(
        registry=registry,
        vault=Vault(app.config["SECRET_KEY"], app.config["HUB_OLD_SECRET_KEYS"]),
        limiter=limiter,
    )

    from hub.web import register_web

    register_web(app)
    for blueprint in registry.blueprints():
        app.register_blueprint(blueprint)
    hops = app.config.get("HUB_PROXY_HOPS") or app.config.get("HUB_TRUSTED_PROXIES") or 0
    if hops:
        # Behind N proxies (the https front the docs ask for) the client is the address
        # they report, not theirs: sign-in limits must count people, not the proxy. The
        # scheme and host are the ones the customer used (secure cookies, CSRF's https
        # referrer check). Without the setting these headers are ignored: anyone can send them.
        # Outermost: the customers' pages (hub.web.customers) see the same client.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    return app


def limiter_storage(redis_url: str) -> str:
    """The hub's Redis in the form the `limits` package expects."""
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def _configure_database(app: Flask) -> None:
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if url.startswith("postgresql"):
        # Fail fast with a clear message instead of hanging on an unreachable server.
        options.setdefault("connect_args", {"connect_timeout": 5})
    elif url.startswith("sqlite"):
        options.setdefault("connect_args", {"timeout": 30})
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


#: A pooled PostgreSQL connection that sat idle this long is tested before use (a
#: restarted server or a proxy's idle timeout drops connections). One in steady use is
#: not: SQLAlchemy's `pool_pre_ping` would add a round trip to every transaction, and a
#: send job makes two per email.
PING_AFTER_IDLE = 10.0


@event.listens_for(Pool, "checkin")
def _note_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    connection_record.info["checked_in_at"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
    since = connection_record.info.get("checked_in_at")
    if isinstance(dbapi_connection, sqlite3.Connection) or since is None:
        return  # a file needs no test; a new connection was just made
    if time.monotonic() - since < PING_AFTER_IDLE:
        return
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        cursor.close()
        dbapi_connection.rollback()
    except Exception as exc:
        # The pool drops this connection and checks out (or makes) another.
        raise DisconnectionError(f"A pooled database connection was dropped: {exc}") from exc


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    # WAL lets the web process read while a worker writes; SQLite leaves foreign keys
    # off unless asked.
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
