"""Flask extension singletons, bound to an app in `create_app()`."""

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class HubSQLAlchemy(SQLAlchemy):
    """Flask-SQLAlchemy, able to give a second app the engines of the first."""

    def share_engines(self, app: Flask, source: Flask) -> None:
        """Let `app` use `source`'s engines (and so its connection pools) and sessions.

        The customers' pages run on an app of their own (hub.web.customers); a second
        `init_app` would open a second pool per process.
        """
        app.extensions["sqlalchemy"] = self
        self._app_engines[app] = self._app_engines[source]
        app.teardown_appcontext(self._teardown_session)


db = HubSQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


@contextmanager
def rows_kept() -> Iterator[None]:
    """Within the block, a commit leaves the session's rows loaded instead of expiring
    them: for jobs that commit once per ticket or email and would otherwise read every
    row (and its survey) again after each commit. Their updates are conditional
    statements, so a stale attribute never decides anything."""
    session = db.session()
    before = session.expire_on_commit
    session.expire_on_commit = False
    try:
        yield
    finally:
        session.expire_on_commit = before
