"""Pooled PostgreSQL connections: tested after sitting idle, not on every use."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import event
from sqlalchemy import select
from sqlalchemy import text

import hub.app
from hub.extensions import db
from hub.models import User


def test_a_connection_dropped_while_idle_is_replaced_and_a_busy_one_is_not_pinged(
    postgres_schema_url, tmp_path
):
    from tests.conftest import make_config

    app = hub.app.create_app(make_config(tmp_path, postgres_schema_url))
    statements: Counter = Counter()
    with app.app_context():
        db.create_all()
        engine = db.engine

        @event.listens_for(engine, "before_cursor_execute")
        def count(conn, cursor, sql, *args):
            statements[sql.split()[0].upper()] += 1

        for _ in range(5):  # steady use: one statement per transaction, no test query
            db.session.execute(select(User.id)).all()
            db.session.commit()
        assert statements == Counter(SELECT=5)

        # The server drops the pooled connection (a restart, a proxy's idle timeout).
        pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        db.session.commit()
        with engine.pool._creator() as killer:  # a connection outside the pool
            killer.autocommit = True
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # ...and the connection then sat idle longer than PING_AFTER_IDLE.
        with engine.connect() as probe:
            record = probe.connection._connection_record
        record.info["checked_in_at"] -= hub.app.PING_AFTER_IDLE + 1

        assert db.session.execute(select(User.id)).all() == []  # no error: a new connection
        new_pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
        db.session.commit()
        assert new_pid != pid
        db.session.remove()
        db.drop_all()
        engine.dispose()
