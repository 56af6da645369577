"""Migrations build the schema from nothing, and match the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade
from flask_migrate import upgrade
from sqlalchemy import inspect

from hub.app import create_app
from hub.extensions import db
from tests.conftest import make_config

TABLES = {
    "users",
    "connections",
    "surveys",
    "deliveries",
    "ratings",
    "write_backs",
    "suppressions",
    "own_writes",
    "milestones",
}


def schema_differences(app) -> list:
    with app.app_context(), db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "render_as_batch": True}
        )
        return compare_metadata(context, db.metadata)


def test_upgrade_builds_every_table_on_an_empty_database(tmp_path, database_url):
    app = create_app(make_config(tmp_path, database_url))
    with app.app_context():
        assert inspect(db.engine).get_table_names() == []
        upgrade()
        assert set(inspect(db.engine).get_table_names()) >= TABLES


def test_models_and_migrations_do_not_differ(tmp_path, database_url):
    app = create_app(make_config(tmp_path, database_url))
    with app.app_context():
        upgrade()
    assert schema_differences(app) == []


def test_comparison_notices_a_model_change(tmp_path, database_url):
    """The check above can fail: a column missing from the migrations is reported."""
    app = create_app(make_config(tmp_path, database_url))
    with app.app_context():
        upgrade()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE suppressions DROP COLUMN reason")
    differences = schema_differences(app)
    assert any(diff[0] == "add_column" and diff[3].name == "reason" for diff in differences)


def test_downgrade_removes_everything(tmp_path, database_url):
    app = create_app(make_config(tmp_path, database_url))
    with app.app_context():
        upgrade()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}


def test_upgrading_a_database_with_data_keeps_it_consistent(tmp_path, database_url):
    """From 0004 with data: doubled pending write-backs of one rating are merged (the
    new unique index needs it) and an existing admin counts as the first admin."""
    app = create_app(make_config(tmp_path, database_url))
    with app.app_context():
        upgrade(revision="0004")
        with db.engine.begin() as conn:
            run = conn.exec_driver_sql
            now = "'2026-11-01 10:00:00+00'"
            run(
                "INSERT INTO users (id, email, name, role, status, created_at, updated_at) "
                f"VALUES (1, 'ann@example.com', 'Ann', 'admin', 'active', {now}, {now})"
            )
            run(
                "INSERT INTO connections (id, helpdesk, name, settings, status, status_message,"
                f" created_at, updated_at) VALUES (1, 'kustomer', 'A', '{{}}', 'new', '', {now},"
                f" {now})"
            )
            run(
                "INSERT INTO surveys (id, connection_id, metric, scale, name, settings, active,"
                " last_scan_error, created_at, updated_at) VALUES (1, 1, 'nps', 11, 'NPS', '{}',"
                f" false, '', {now}, {now})"
            )
            run(
                "INSERT INTO deliveries (id, survey_id, ticket_id, requester_name, state, error,"
                f" attempts, created_at, updated_at) VALUES (1, 1, 't1', '', 'sent', '', 1, {now},"
                f" {now})"
            )
            run(
                "INSERT INTO ratings (id, delivery_id, survey_id, value, scale, comment,"
                f" suspected_scanner, created_at, updated_at) VALUES (1, 1, 1, 9, 11, '', false,"
                f" {now}, {now})"
            )
            for write_back_id in (1, 2):
                run(
                    "INSERT INTO write_backs (id, rating_id, kind, state, attempts, last_error,"
                    f" created_at, updated_at) VALUES ({write_back_id}, 1, 'score', 'pending', 0,"
                    f" '', {now}, {now})"
                )
        upgrade()
        with db.engine.connect() as conn:
            states = conn.exec_driver_sql(
                "SELECT id, state FROM write_backs ORDER BY id"
            ).fetchall()
            milestones = conn.exec_driver_sql("SELECT key FROM milestones").scalars().all()
            version = conn.exec_driver_sql("SELECT session_version FROM users").scalar_one()
    assert [tuple(row) for row in states] == [(1, "superseded"), (2, "pending")]
    assert milestones == ["first-admin"] and version == 0
