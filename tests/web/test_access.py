"""Agents see their own ratings on their own helpdesk account only: helpdesk user ids
are unique within one account, so another account's agent with the same id is someone
else."""

from __future__ import annotations

from hub.extensions import db
from hub.models import Connection
from hub.models import Delivery
from hub.models import Rating
from hub.models import Survey
from tests.conftest import acme_connection


def rated(connection: Connection, ticket: str, comment: str) -> None:
    survey = Survey(connection=connection, metric="nps", scale=11, name=f"{connection.name} NPS")
    delivery = Delivery(
        survey=survey, ticket_id=ticket, requester_email=f"{ticket}@example.com",
        agent_ref="agent-7", state="sent",
    )  # fmt: skip
    db.session.add(delivery)
    db.session.flush()
    db.session.add(
        Rating(
            delivery_id=delivery.id, survey_id=survey.id, agent_ref="agent-7", value=9,
            scale=11, comment=comment,
        )
    )  # fmt: skip
    db.session.commit()


def test_an_agent_sees_nothing_of_another_helpdesk_account_with_the_same_ids(app, agent):
    with app.app_context():
        rated(acme_connection(), "acme-ticket", "Acme customer's words")
        rated(Connection(helpdesk="kustomer", name="Globex", settings={}), "globex-ticket",
              "Globex customer's words")  # fmt: skip
    mine = agent.get("/me?from=").text
    assert "Acme customer&#39;s words" in mine or "Acme customer's words" in mine
    assert "Globex customer" not in mine
    log = agent.get("/deliveries").text
    assert "acme-ticket" in log
    assert "globex-ticket" not in log and "Globex customer" not in log
