"""A hub wired to a live Kustomer sandbox and a real SMTP server, with an active survey."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hub.extensions import db
from hub.models import Connection
from hub.models import Survey
from hub.pipeline.activation import activate
from hub.suppressions import suppress
from surveyhub_kustomer.sandbox.org import EXCLUDED_TAG
from surveyhub_kustomer.sandbox.org import UNSUBSCRIBED
from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture)


@dataclass
class Setup:
    app: object
    sandbox: object
    smtp: object
    survey_id: int
    connection_id: int


def add_survey(connection_id: int, metric: str = "nps", scale: int = 11, **settings) -> int:
    settings.setdefault("company_name", "Acme")
    settings.setdefault("excluded_tags", [EXCLUDED_TAG])
    survey = Survey(
        connection_id=connection_id, metric=metric, scale=scale, name=metric, settings=settings
    )
    db.session.add(survey)
    db.session.commit()
    activate(survey, lookback_days=30)
    return survey.id


@pytest.fixture
def hub(app, sandbox, smtp_server, redis_client):  # noqa: F811
    """An active NPS survey on a connection to the sandbox; mail goes to `smtp_server`."""
    app.config.update(
        HUB_ALLOWED_HELPDESK_URLS=[sandbox.url],
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=smtp_server.port,
    )
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Sandbox", settings={"url": sandbox.url})
        connection.set_secrets({"api_key": sandbox.seeded.api_key})
        db.session.add(connection)
        db.session.commit()
        suppress(UNSUBSCRIBED, "unsubscribed")
        survey_id = add_survey(connection.id)
        return Setup(app, sandbox, smtp_server, survey_id, connection.id)
