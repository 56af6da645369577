"""The set-up pages against the Kustomer sandbox: metric page, wizard, connect checks,
agents and invitations, trigger settings, activation and who may see them."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func
from sqlalchemy import select

from hub.extensions import db
from hub.models import Connection
from hub.models import Role
from hub.models import Survey
from hub.models import User
from surveyhub_kustomer.sandbox.org import ApiKey
from tests.web.conftest import add_person
from tests.web.conftest import csrf_of
from tests.web.conftest import signed_in


@pytest.fixture
def wired(app, sandbox, smtp_server, redis_client):
    """The app allowed to reach the sandbox, sending mail to the test SMTP server."""
    app.config.update(
        HUB_ALLOWED_HELPDESK_URLS=[sandbox.url],
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=smtp_server.port,
    )
    return app


def count(app, model) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def start_draft(admin, metric="nps", name="Support NPS", **extra):
    page = admin.get(f"/metrics/{metric}/new").text
    data = {"csrf_token": csrf_of(page), "name": name, "distribution": "trigger", **extra}
    return admin.post(f"/metrics/{metric}/new", data=data)


def connect(admin, url, api_key):
    page = admin.get("/metrics/nps/new/connect/kustomer")
    assert page.status_code == 200, page.text
    return admin.post(
        "/metrics/nps/new/connect/kustomer",
        data={"csrf_token": csrf_of(page.text), "url": url, "api_key": api_key},
    )


def field_error(html: str, field: str) -> str:
    found = re.search(rf'<p class="field-error" id="f-{field}-error">([^<]*)</p>', html)
    return found.group(1) if found else ""


def test_metric_page_offers_start_until_a_survey_exists(app, admin):
    page = admin.get("/metrics/nps")
    assert page.status_code == 200
    assert "Start NPS" in page.text and "New survey" in page.text
    assert "{company}" not in page.text
    assert admin.get("/metrics/nope").status_code == 404


def test_back_and_continue_keep_the_input(app, admin):
    response = start_draft(admin, name="Brand A NPS")
    assert response.status_code == 302 and response.headers["Location"].endswith("/apps")
    back = admin.get("/metrics/nps/new").text
    assert 'value="Brand A NPS"' in back
    # An invalid step keeps what was typed, and says what is wrong.
    page = admin.post(
        "/metrics/nps/new", data={"csrf_token": csrf_of(back), "name": " ", "distribution": ""}
    )
    assert page.status_code == 422
    assert "Give the survey a name" in page.text and "Choose Trigger" in page.text


def test_app_directory_has_a_tile_per_helpdesk_plugin(app, admin):
    start_draft(admin)
    page = admin.get("/metrics/nps/new/apps").text
    assert 'href="/metrics/nps/new/connect/kustomer"' in page
    assert "<strong>Kustomer</strong>" in page


def test_app_directory_without_a_draft_starts_at_step_one(app, admin):
    response = admin.get("/metrics/nps/new/apps")
    assert response.status_code == 302 and response.headers["Location"].endswith("/metrics/nps/new")


def test_wrong_key_is_explained_next_to_the_field_and_nothing_is_saved(wired, admin, sandbox):
    start_draft(admin)
    page = connect(admin, sandbox.url, "not-a-key")
    assert page.status_code == 422
    assert "Kustomer" in field_error(page.text, "api_key")
    assert 'value="not-a-key"' not in page.text  # secrets are never filled back
    assert count(wired, Connection) == 0 and count(wired, Survey) == 0


def test_missing_roles_are_named_and_nothing_is_saved(wired, admin, sandbox):
    sandbox.org.keys["narrow-key"] = ApiKey(
        "narrow-key", "Narrow", roles=("org.permission.search.create",)
    )
    start_draft(admin)
    page = connect(admin, sandbox.url, "narrow-key")
    assert page.status_code == 422
    error = field_error(page.text, "api_key")
    assert "org.permission.note.create" in error and "org.permission.user.read" in error
    assert count(wired, Connection) == 0


def test_a_disallowed_url_is_explained_next_to_the_url(wired, admin, sandbox):
    start_draft(admin)
    page = connect(admin, "http://127.0.0.1:9/", sandbox.seeded.api_key)
    assert page.status_code == 422
    assert field_error(page.text, "url")
    assert not field_error(page.text, "api_key")
    assert count(wired, Connection) == 0


def test_empty_fields_are_required(wired, admin, sandbox):
    start_draft(admin)
    page = connect(admin, "", "")
    assert page.status_code == 422
    assert field_error(page.text, "url") and field_error(page.text, "api_key")


def test_the_wizard_from_metric_to_activation(wired, admin, sandbox, smtp_server):
    start_draft(admin, name="Support NPS")
    done = connect(admin, sandbox.url, sandbox.seeded.api_key)
    assert done.status_code == 302, done.text
    with wired.app_context():
        connection = db.session.execute(select(Connection)).scalar_one()
        survey = db.session.execute(select(Survey)).scalar_one()
        assert connection.get_secrets() == {"api_key": sandbox.seeded.api_key}
        assert sandbox.seeded.api_key not in (connection.secrets_encrypted or "")
        assert (survey.name, survey.metric, survey.active) == ("Support NPS", "nps", False)
        survey_id = survey.id
    assert done.headers["Location"].endswith(f"/surveys/{survey_id}/agents")

    # Agents: the helpdesk's humans only (no machine users, no deleted ones).
    page = admin.get(f"/surveys/{survey_id}/agents").text
    assert "Alex Agent" in page and "Bea Agent" in page
    assert "SurveyHub key" not in page and "Former Agent" not in page
    alex = re.search(r'name="agent" value="([0-9a-f]+)"> Alex Agent', page).group(1)
    step = admin.post(
        f"/surveys/{survey_id}/agents", data={"csrf_token": csrf_of(page), "agent": [alex]}
    )
    assert step.headers["Location"].endswith(f"/surveys/{survey_id}?setup=1")
    [invite] = smtp_server.handler.messages
    assert invite["To"].addresses[0].addr_spec == "alex@acme.example"
    with wired.app_context():
        agent = db.session.execute(select(User).where(User.role == Role.AGENT.value)).scalar_one()
        assert (agent.status, agent.helpdesk_user_id) == ("invited", alex)

    # Trigger settings: Save settings never activates; Activate does.
    page = admin.get(f"/surveys/{survey_id}?setup=1").text
    assert "Save settings" in page and "Activate" in page
    saved = admin.post(
        f"/surveys/{survey_id}",
        data={
            "csrf_token": csrf_of(page),
            "survey_name": "Support NPS",
            "delay_hours": "24",
            "channels": "email",
            "resolved_statuses": "done",
            "excluded_tags": "",
            "require_assignee": "on",
            "skip_helpdesk_surveyed": "on",
            "cooldown_days": "30",
            "reminder_days": "",
            "sender_name": "Acme Support",
            "reply_to": "",
            "subject": "",
            "intro": "",
            "question": "",
            "brand_color": "#2f5bea",
            "company_name": "Acme",
            "attribute_name": "surveyhubNpsScoreNum",
            "add_note": "on",
            "link_expiry_days": "30",
            "language": "auto",
        },
    )
    assert saved.status_code == 302
    with wired.app_context():
        survey = db.session.get(Survey, survey_id)
        assert survey.active is False
        assert survey.settings["delay_hours"] == 24 and survey.settings["reminder_days"] is None
    page = admin.get(f"/surveys/{survey_id}").text
    assert 'value="Acme Support"' in page
    activated = admin.post(
        f"/surveys/{survey_id}/activate", data={"csrf_token": csrf_of(page), "lookback_days": "3"}
    )
    assert activated.status_code == 302
    with wired.app_context():
        survey = db.session.get(Survey, survey_id)
        assert survey.active is True and survey.resolved_since is not None
    assert "surveyhubNpsScoreNum" in sandbox.state()["metadata"]["conversation"]["properties"]
    page = admin.get(f"/surveys/{survey_id}").text
    assert "Deactivate" in page and "badge on" in page
    # Saving again while active leaves it active.
    admin.post(f"/surveys/{survey_id}", data={"csrf_token": csrf_of(page), "survey_name": "X"})
    with wired.app_context():
        assert db.session.get(Survey, survey_id).active is True


def test_invalid_settings_are_explained_next_to_the_fields_and_not_saved(wired, admin, sandbox):
    start_draft(admin)
    connect(admin, sandbox.url, sandbox.seeded.api_key)
    with wired.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
    page = admin.get(f"/surveys/{survey_id}").text
    response = admin.post(
        f"/surveys/{survey_id}",
        data={
            "csrf_token": csrf_of(page),
            "survey_name": "Support NPS",
            "delay_hours": "-3",
            "brand_color": "blue",
            "attribute_name": "score",
            "reply_to": "not an address",
        },
    )
    assert response.status_code == 422
    for field in ("delay_hours", "brand_color", "attribute_name", "reply_to"):
        assert field_error(response.text, field), field
    assert 'value="blue"' in response.text  # what was typed stays in the form
    with wired.app_context():
        assert "delay_hours" not in (db.session.get(Survey, survey_id).settings or {})


def test_email_preview_and_dry_run(wired, admin, sandbox):
    start_draft(admin)
    connect(admin, sandbox.url, sandbox.seeded.api_key)
    with wired.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
    preview = admin.get(f"/surveys/{survey_id}/email-preview")
    assert preview.status_code == 200
    assert "How likely are you to recommend" in preview.text
    assert preview.headers["X-Frame-Options"] == "SAMEORIGIN"
    page = admin.get(f"/surveys/{survey_id}/dry-run").text
    result = admin.post(
        f"/surveys/{survey_id}/dry-run", data={"csrf_token": csrf_of(page), "lookback_days": "30"}
    )
    assert result.status_code == 200
    assert "Would send" in result.text
    assert "started by an agent" in result.text and "wrong channel" in result.text
    assert count(wired, Connection) == 1  # and nothing else was written
    from hub.models import Delivery

    assert count(wired, Delivery) == 0


def test_invited_agent_sets_a_password_once_and_signs_in(wired, admin, sandbox, smtp_server):
    start_draft(admin)
    connect(admin, sandbox.url, sandbox.seeded.api_key)
    with wired.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
    page = admin.get(f"/surveys/{survey_id}/agents").text
    bea = re.search(r'name="agent" value="([0-9a-f]+)"> Bea Agent', page).group(1)
    admin.post(f"/surveys/{survey_id}/agents", data={"csrf_token": csrf_of(page), "agent": bea})
    [message] = smtp_server.handler.messages
    link = re.search(r"http://\S+/invite/(\S+)", message.get_content()).group(0)
    path = "/invite/" + link.rsplit("/invite/", 1)[1]
    guest = wired.test_client()
    form = guest.get(path)
    assert form.status_code == 200 and "bea@acme.example" in form.text
    short = guest.post(
        path, data={"csrf_token": csrf_of(form.text), "password": "short", "confirm": "short"}
    )
    assert "at least 10 characters" in short.text
    done = guest.post(
        path,
        data={
            "csrf_token": csrf_of(form.text),
            "password": "a long enough password",
            "confirm": "a long enough password",
        },
    )
    assert done.status_code == 302
    assert guest.get(path).status_code == 404  # single use
    login = guest.get("/login").text
    signed = guest.post(
        "/login",
        data={
            "csrf_token": csrf_of(login),
            "email": "bea@acme.example",
            "password": "a long enough password",
        },
    )
    assert signed.status_code == 302
    assert guest.get("/operations").status_code == 403
    assert guest.get(f"/surveys/{survey_id}").status_code == 403


def test_tampered_invitation_link_is_friendly(app, client):
    response = client.get("/invite/not-a-token")
    assert response.status_code == 404
    assert "not valid" in response.text


def test_archiving_an_agent_ends_their_sessions(app, admin):
    agent_id = add_person(app, "gone@example.com", helpdesk_user_id="agent-9")
    gone = signed_in(app, agent_id)
    assert gone.get("/").status_code in (200, 302)
    page = admin.get("/agents").text
    admin.post(f"/agents/{agent_id}/archive", data={"csrf_token": csrf_of(page)})
    with app.app_context():
        assert db.session.get(User, agent_id).status == "archived"
    assert gone.get("/").status_code == 302 and "/login" in gone.get("/").headers["Location"]


ADMIN_PAGES = [
    "/metrics/nps",
    "/metrics/nps/new",
    "/metrics/nps/new/apps",
    "/metrics/nps/new/connect/kustomer",
    "/agents",
    "/connections/1/agents",
    "/connections/1/edit",
    "/surveys/1",
    "/surveys/1/agents",
    "/surveys/1/email-preview",
    "/surveys/1/dry-run",
]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_agents_get_403_on_set_up_and_connection_pages(app, agent, path):
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Acme", settings={})
        db.session.add(Survey(connection=connection, metric="nps", scale=11, name="NPS"))
        db.session.commit()
    assert agent.get(path).status_code == 403


@pytest.mark.parametrize(
    "path",
    ["/surveys/1/activate", "/surveys/1/deactivate", "/metrics/nps/new/use/1", "/agents/1/archive"],
)
def test_agents_cannot_post_to_set_up_actions(app, agent, path):
    page = agent.get("/me").text if agent.get("/me").status_code == 200 else ""
    token = csrf_of(page) if "csrf_token" in page else ""
    assert agent.post(path, data={"csrf_token": token}).status_code == 403


def test_posts_without_csrf_token_are_refused(app, admin):
    assert admin.post("/metrics/nps/new", data={"name": "X"}).status_code == 400


def test_an_api_key_is_replaced_after_a_check_and_kept_when_left_empty(wired, admin, sandbox):
    start_draft(admin)
    connect(admin, sandbox.url, sandbox.seeded.api_key)
    with wired.app_context():
        connection_id = db.session.execute(select(Connection.id)).scalar_one()
    page = admin.get(f"/connections/{connection_id}/edit")
    assert page.status_code == 200 and f'value="{sandbox.url}"' in page.text
    assert sandbox.seeded.api_key not in page.text
    wrong = admin.post(
        f"/connections/{connection_id}/edit",
        data={"csrf_token": csrf_of(page.text), "url": sandbox.url, "api_key": "expired-key"},
    )
    assert wrong.status_code == 422 and field_error(wrong.text, "api_key")
    with wired.app_context():
        kept = db.session.get(Connection, connection_id).get_secrets()
        assert kept == {"api_key": sandbox.seeded.api_key}  # nothing changed
    sandbox.org.keys["fresh-key"] = ApiKey("fresh-key", "Fresh key")
    fresh = admin.post(
        f"/connections/{connection_id}/edit",
        data={"csrf_token": csrf_of(page.text), "url": sandbox.url, "api_key": "fresh-key"},
    )
    assert fresh.status_code == 302
    same = admin.post(
        f"/connections/{connection_id}/edit",
        data={"csrf_token": csrf_of(page.text), "url": sandbox.url, "api_key": ""},
    )
    assert same.status_code == 302
    with wired.app_context():
        connection = db.session.get(Connection, connection_id)
        assert connection.get_secrets() == {"api_key": "fresh-key"}
        assert "Fresh key" in connection.status_message


def test_a_new_attribute_on_an_active_survey_is_defined_in_the_helpdesk(wired, admin, sandbox):
    start_draft(admin)
    connect(admin, sandbox.url, sandbox.seeded.api_key)
    with wired.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
    page = admin.get(f"/surveys/{survey_id}").text
    admin.post(f"/surveys/{survey_id}/activate", data={"csrf_token": csrf_of(page)})
    saved = admin.post(
        f"/surveys/{survey_id}",
        data={
            "csrf_token": csrf_of(page), "survey_name": "Support NPS",
            "attribute_name": "supportNpsNum",
        },
    )  # fmt: skip
    assert saved.status_code == 302
    properties = sandbox.state()["metadata"]["conversation"]["properties"]
    assert "supportNpsNum" in properties and "surveyhubNpsScoreNum" in properties
