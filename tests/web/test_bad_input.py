"""Bad input on the admin pages gets a clear answer, never a 500."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.extensions import db
from hub.models import Survey
from tests.conftest import acme_connection
from tests.web.conftest import csrf_of

HUGE = "99999999999999999999"


@pytest.fixture
def survey_id(app):
    with app.app_context():
        survey = Survey(connection=acme_connection(), metric="nps", scale=11, name="NPS")
        db.session.add(survey)
        db.session.commit()
        return survey.id


@pytest.mark.parametrize(
    "path",
    [
        f"/surveys/{HUGE}", f"/surveys/{HUGE}/report", f"/surveys/{HUGE}/funnel",
        f"/surveys/{HUGE}/agents", f"/surveys/{HUGE}/dry-run", f"/surveys/{HUGE}/ratings.csv",
        f"/surveys/{HUGE}/email-preview", f"/connections/{HUGE}/agents",
    ],
)  # fmt: skip
def test_huge_ids_in_pages_are_not_found(app, admin, path):
    assert admin.get(path).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        f"/write-backs/{HUGE}/retry", f"/connections/{HUGE}/check", f"/agents/{HUGE}/archive",
        f"/surveys/{HUGE}/activate", f"/metrics/nps/new/use/{HUGE}",
    ],
)  # fmt: skip
def test_huge_ids_in_actions_are_not_found(app, admin, path):
    token = csrf_of(admin.get("/agents").text)
    assert admin.post(path, data={"csrf_token": token}).status_code == 404


@pytest.mark.parametrize("to", ["0001-01-01", "9999-12-31", "2026-02-30", "soon"])
def test_calendar_edges_in_the_funnel_and_the_log(app, admin, survey_id, to):
    for path in (f"/surveys/{survey_id}/funnel", "/deliveries", f"/surveys/{survey_id}/report"):
        response = admin.get(f"{path}?from=0001-01-01&to={to}")
        assert response.status_code in (200, 400), (path, response.status_code)
        response = admin.get(f"{path}?to={to}")
        assert response.status_code in (200, 400), (path, response.status_code)


@pytest.mark.parametrize("days", ["²", "٣", "-1", "1e3", "91", "x"])
def test_look_back_must_be_plain_days(app, admin, survey_id, days):
    page = admin.get(f"/surveys/{survey_id}/dry-run").text
    preview = admin.post(
        f"/surveys/{survey_id}/dry-run", data={"csrf_token": csrf_of(page), "lookback_days": days}
    )
    assert preview.status_code == 200 and "whole number of days" in preview.text
    activated = admin.post(
        f"/surveys/{survey_id}/activate",
        data={"csrf_token": csrf_of(page), "lookback_days": days},
        follow_redirects=True,
    )
    assert activated.status_code == 200 and "whole number of days" in activated.text
    with app.app_context():
        assert db.session.get(Survey, survey_id).active is False


def test_unicode_digits_as_a_scale_are_refused(app, admin):
    page = admin.get("/metrics/csat/new").text
    response = admin.post(
        "/metrics/csat/new",
        data={"csrf_token": csrf_of(page), "name": "CSAT", "scale": "²", "distribution": "trigger"},
    )
    assert response.status_code == 422 and "Pick one of the scales" in response.text


def test_control_characters_leave_names(app, admin, survey_id):
    page = admin.get(f"/surveys/{survey_id}").text
    admin.post(
        f"/surveys/{survey_id}",
        data={"csrf_token": csrf_of(page), "survey_name": "Support\x00 NPS\n2"},
    )
    with app.app_context():
        assert db.session.execute(select(Survey.name)).scalar_one() == "Support NPS 2"


def test_a_nul_in_the_agent_filter_is_explained(app, admin):
    response = admin.get("/deliveries?agent=%00")
    assert response.status_code == 400 and "helpdesk user id" in response.text


def test_an_unreadable_helpdesk_key_is_explained_on_the_agents_step(app, admin, survey_id):
    with app.app_context():
        connection = acme_connection()
        connection.secrets_encrypted = "not what the vault wrote"
        db.session.commit()
    page = admin.get(f"/surveys/{survey_id}/agents")
    assert page.status_code == 200 and "Could not read the helpdesk" in page.text
