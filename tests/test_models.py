"""The data model on SQLite and PostgreSQL: secrets at rest, uniqueness, time zones."""

from __future__ import annotations

from datetime import UTC
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from hub.crypto import SecretsUnreadable
from hub.crypto import Vault
from hub.extensions import db
from hub.models import Connection
from hub.models import Delivery
from hub.models import Survey

API_KEY = "eyJhbGciOiJIUzI1NiJ9.super-secret-kustomer-key.abc123"


def make_survey() -> Survey:
    connection = Connection(helpdesk="kustomer", name="Acme", settings={"url": "acme"})
    connection.set_secrets({"api_key": API_KEY})
    survey = Survey(connection=connection, metric="nps", scale=11, name="NPS")
    db.session.add(survey)
    db.session.commit()
    return survey


def test_raw_connection_row_does_not_contain_the_api_key(app):
    with app.app_context():
        connection = make_survey().connection
        row = db.session.execute(
            text("SELECT * FROM connections WHERE id = :id"), {"id": connection.id}
        ).one()
        raw = " ".join(str(value) for value in row)
        assert API_KEY not in raw
        assert "super-secret" not in raw
        assert API_KEY not in repr(connection)
        db.session.expire_all()
        assert db.session.get(Connection, connection.id).get_secrets() == {"api_key": API_KEY}


def test_secrets_survive_key_rotation(app):
    with app.app_context():
        connection = make_survey().connection
        token = connection.secrets_encrypted
    new_vault = Vault("a-brand-new-secret-key-0123456789", [app.config["SECRET_KEY"]])
    rotated = new_vault.rotate(token)
    assert Vault("a-brand-new-secret-key-0123456789").decrypt(rotated) == {"api_key": API_KEY}
    with pytest.raises(SecretsUnreadable, match="HUB_OLD_SECRET_KEYS"):
        Vault("a-brand-new-secret-key-0123456789").decrypt(token)


def test_one_delivery_per_survey_and_ticket(app):
    with app.app_context():
        survey = make_survey()
        db.session.add(Delivery(survey=survey, ticket_id="conv-1"))
        db.session.commit()
        db.session.add(Delivery(survey=survey, ticket_id="conv-1"))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()
        db.session.add(Delivery(survey=survey, ticket_id="conv-2"))
        db.session.commit()
        assert db.session.execute(select(db.func.count(Delivery.id))).scalar_one() == 2


def test_timestamps_come_back_timezone_aware_in_utc(app):
    with app.app_context():
        survey = make_survey()
        plus_two = timezone(timedelta(hours=2))
        survey.watermark = datetime(2026, 10, 20, 12, 0, tzinfo=plus_two)
        db.session.commit()
        db.session.expire_all()
        stored = db.session.get(Survey, survey.id)
        assert stored.watermark == datetime(2026, 10, 20, 10, 0, tzinfo=UTC)
        assert stored.watermark.tzinfo is not None
        assert stored.created_at.tzinfo is not None


def test_naive_datetimes_are_rejected(app):
    with app.app_context():
        survey = make_survey()
        survey.watermark = datetime(2026, 10, 20, 12, 0)
        with pytest.raises(Exception, match="naive datetime"):
            db.session.commit()
        db.session.rollback()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    from hub.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, f"sqlite:///{tmp_path / 'wal.db'}"))
    with app.app_context(), db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
