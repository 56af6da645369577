"""Reachability checks for the database and Redis, with messages a person can act on."""

from __future__ import annotations

from urllib.parse import urlsplit
from urllib.parse import urlunsplit

from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url

from hub.extensions import db
from hub.jobs import redis_connection


class ServiceUnavailable(RuntimeError):
    """The database or Redis does not answer; the message says which and where."""


def redact_url(url: str) -> str:
    """The URL with any password replaced, safe to print or log."""
    if url.startswith(("postgresql", "sqlite", "mysql")):
        return make_url(url).render_as_string(hide_password=True)
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_database(app: Flask) -> None:
    """Raise `ServiceUnavailable` unless the database answers a query."""
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    try:
        with app.app_context(), db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        raise ServiceUnavailable(
            f"Cannot reach the database at {redact_url(url)}: {_first_line(exc)}. "
            "Check DATABASE_URL and that the database server is running."
        ) from exc


def check_redis(app: Flask) -> None:
    """Raise `ServiceUnavailable` unless Redis answers PING."""
    url = app.config["REDIS_URL"]
    try:
        redis_connection(app).ping()
    except Exception as exc:
        raise ServiceUnavailable(
            f"Cannot reach Redis at {redact_url(url)}: {_first_line(exc)}. "
            "Check REDIS_URL and that the Redis server is running "
            "(leave REDIS_URL unset to use the Redis bundled with `surveyhub run`)."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    return text_[0] if text_ else type(exc).__name__
