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
