"""The API's set-up and data resources: helpdesks, connections (checked, secrets
write-only), surveys (create, settings, dry run), agents (invite, archive), deliveries
with their write-back state, and streamed CSV / NDJSON exports with the list filters."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import func
from sqlalchemy import select

from hub.extensions import db
from hub.models import Connection
from hub.models import Delivery
from hub.models import Rating
from hub.models import Role
from hub.models import Survey
from hub.models import User
from hub.models import WriteBack
from hub.pipeline.decide import EXCLUDED_TAG
from hub.pipeline.decide import UNSUBSCRIBED
from tests.api.test_api import add_rating
from tests.api.test_api import bearer
from tests.api.test_api import token_for
from tests.web.conftest import add_person


@pytest.fixture
def admin_id(app):
    return add_person(app, "admin@example.com", Role.ADMIN.value)


@pytest.fixture
def wired(app, sandbox, smtp_server, redis_client):
    """The app allowed to reach the sandbox, sending mail to the test SMTP server."""
    app.config.update(
        HUB_ALLOWED_HELPDESK_URLS=[sandbox.url], SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port
    )
    return app


def count(app, model) -> int:
    with app.app_context():
        return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_set_up_a_survey_through_the_api(wired, admin_id, sandbox, smtp_server):
    client = wired.test_client()
    write = bearer(token_for(wired, admin_id, "write"))
    read = bearer(token_for(wired, admin_id, "read"))
    key = sandbox.seeded.api_key

    helpdesks = client.get("/api/v1/helpdesks", headers=read).json
    fields = {f["name"]: f for f in helpdesks[0]["fields"]}
    assert helpdesks[0]["key"] == "kustomer" and fields["api_key"]["secret"] is True

    def connect(settings):
        body = {"helpdesk": "kustomer", "settings": settings}
        return client.post("/api/v1/connections", json=body, headers=write)

    wrong = connect({"url": sandbox.url, "api_key": "not-a-key"})
    assert wrong.status_code == 422 and wrong.mimetype == "application/problem+json"
    assert wrong.json["errors"]["settings"]["api_key"]
    extra = connect({"url": sandbox.url, "api_key": key, "password": "x"})
    assert extra.status_code == 422 and "password" in extra.json["errors"]["settings"]
    assert client.post(
        "/api/v1/connections", json={"helpdesk": "zendesk", "settings": {}}, headers=write
    ).json["errors"]["helpdesk"]
    assert count(wired, Connection) == 0
    good = connect({"url": sandbox.url, "api_key": key})
    assert good.status_code == 201, good.text
    assert key not in good.text
    made = client.get("/api/v1/connections", headers=read)
    assert key not in made.text
    [connection] = made.json
    assert connection["status"] == "connected" and "api_key" not in connection["settings"]
    assert client.post(
        "/api/v1/connections", json={"helpdesk": "kustomer", "settings": {"url": sandbox.url,
        "api_key": key}}, headers=read
    ).status_code == 403  # fmt: skip

    bad = client.post(
        "/api/v1/surveys",
        json={"name": "NPS", "metric": "nps", "scale": 4, "connection_id": connection["id"]},
        headers=write,
    )
    assert bad.status_code == 422 and bad.json["errors"]["scale"]
    created = client.post(
        "/api/v1/surveys",
        json={"name": "Support NPS", "metric": "nps", "connection_id": connection["id"]},
        headers=write,
    )
    assert created.status_code == 201, created.text
    survey = created.json
    assert survey["scale"] == 11 and survey["active"] is False
    assert survey["settings"]["delay_hours"] == 48
    url = f"/api/v1/surveys/{survey['id']}"

    refused = client.patch(url, json={"settings": {"delay_hours": -1}}, headers=write)
    assert refused.status_code == 422 and refused.json["errors"]["settings"]["delay_hours"]
    unknown = client.patch(url, json={"settings": {"delay": 2}}, headers=write)
    assert unknown.status_code == 422 and "delay" in unknown.json["errors"]["settings"]
    changed = client.patch(url, json={"name": "NPS 2", "settings": {"excluded_tags": ["vip"]}},
                           headers=write)  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json["name"] == "NPS 2" and changed.json["settings"]["excluded_tags"] == ["vip"]
    assert changed.json["settings"]["delay_hours"] == 48  # untouched settings stay
    assert changed.json["active"] is False

    preview = client.post(f"{url}/dry-run", json={"lookback_days": 30}, headers=write)
    assert preview.status_code == 200, preview.text
    sent_to = {t["ticket_id"] for t in preview.json["tickets"] if t["send"]}
    # The seed's excluded tag is not this survey's, and nobody unsubscribed here.
    assert sent_to >= set(sandbox.seeded.eligible)
    extra = {sandbox.seeded.skipped[t] for t in sent_to - set(sandbox.seeded.eligible)}
    assert extra <= {EXCLUDED_TAG, UNSUBSCRIBED}
    decided = {t["ticket_id"]: t["skip_reason"] for t in preview.json["tickets"]}
    for ticket_id, reason in sandbox.seeded.skipped.items():
        assert decided.get(ticket_id, reason) == reason or reason in extra
    assert preview.json["would_send"] == len(sent_to)
    assert count(wired, Delivery) == 0  # a dry run writes nothing

    people = client.get(f"/api/v1/connections/{connection['id']}/helpdesk-users", headers=read)
    alex = next(p for p in people.json if p["email"] == "alex@acme.example")
    assert alex["account_id"] is None
    invited = client.post(
        "/api/v1/agents/invite",
        json={"connection_id": connection["id"], "helpdesk_user_ids": [alex["id"], "nobody"]},
        headers=write,
    )
    assert invited.status_code == 200, invited.text
    assert [u["email"] for u in invited.json["invited"]] == ["alex@acme.example"]
    assert invited.json["unknown"] == ["nobody"]
    assert [e.rcpt_tos for e in smtp_server.handler.envelopes] == [["alex@acme.example"]]
    user_id = invited.json["invited"][0]["id"]
    archived = client.post(f"/api/v1/agents/{user_id}/archive", headers=write)
    assert archived.json["status"] == "archived"
    assert client.post(f"/api/v1/agents/{admin_id}/archive", headers=write).status_code == 404
    listed = client.get("/api/v1/agents", headers=read).json
    assert {u["email"]: u["status"] for u in listed}["alex@acme.example"] == "archived"

    activated = client.post(f"{url}/activate", json={}, headers=write)
    assert activated.status_code == 200 and activated.json["active"] is True


def test_deliveries_show_state_skip_reason_and_write_back(app, admin_id):
    rating_id = add_rating(app, 2)
    with app.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
        db.session.add(Delivery(survey_id=survey_id, ticket_id="s1", state="skipped",
                                skip_reason="cooldown"))  # fmt: skip
        db.session.add(WriteBack(rating_id=rating_id, state="failed", attempts=1, last_error="a"))
        db.session.add(WriteBack(rating_id=rating_id, state="failed", attempts=5, last_error="b"))
        db.session.commit()
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    items = client.get("/api/v1/deliveries", headers=headers).json["items"]
    assert [(d["ticket_id"], d["state"]) for d in items] == [("t0", "sent"), ("s1", "skipped")]
    assert items[0]["rating_id"] == rating_id
    assert items[0]["write_back"] == {"state": "failed", "attempts": 5, "last_error": "b",
                                      "done_at": None}  # fmt: skip
    assert items[1]["write_back"] is None and items[1]["skip_reason"] == "cooldown"
    skipped = client.get("/api/v1/deliveries?skip_reason=cooldown", headers=headers).json
    assert [d["ticket_id"] for d in skipped["items"]] == ["s1"]
    first = client.get("/api/v1/deliveries?limit=1", headers=headers).json
    rest = client.get(f"/api/v1/deliveries?cursor={first['next_cursor']}", headers=headers).json
    assert [d["ticket_id"] for d in first["items"] + rest["items"]] == ["t0", "s1"]
    assert rest["next_cursor"] is None
    bad = client.get("/api/v1/deliveries?state=lost", headers=headers)
    assert bad.status_code == 422 and "state" in bad.json["errors"]
    agent = add_person(app, "alex@example.com", helpdesk_user_id="agent-7")
    assert (
        client.get("/api/v1/deliveries", headers=bearer(token_for(app, agent))).status_code == 403
    )


def test_a_group_filter_fills_whole_pages(app, admin_id):
    values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]
    for value in values:
        add_rating(app, value)
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    seen, cursor = [], ""
    while True:
        page = client.get(f"/api/v1/ratings?group=detractor&limit=2{cursor}", headers=headers).json
        assert len(page["items"]) == 2 or page["next_cursor"] is None
        seen += [r["value"] for r in page["items"]]
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [1, 2, 3, 4, 6, 5]


def test_exports_stream_what_the_list_filters(app, admin_id):
    for value, agent, comment in [(10, "a1", "=SUM(A1)"), (2, "a2", "slow"), (9, "a1", "")]:
        add_rating(app, value, agent, comment)
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    listed = client.get("/api/v1/ratings?agent=a1", headers=headers).json["items"]

    response = client.get("/api/v1/ratings/export.ndjson?agent=a1", headers=headers)
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    assert response.is_streamed
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == listed

    response = client.get("/api/v1/ratings/export.csv?group=promoter", headers=headers)
    assert response.mimetype == "text/csv" and "attachment" in response.headers[
        "Content-Disposition"]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(response.text.lstrip("\ufeff"))))
    assert [(r["value"], r["agent_ref"], r["comment"]) for r in rows] == [
        ("10", "a1", "'=SUM(A1)"), ("9", "a1", "")]  # fmt: skip

    deliveries = client.get("/api/v1/deliveries/export.csv?state=sent", headers=headers)
    rows = list(csv.DictReader(io.StringIO(deliveries.text.lstrip("\ufeff"))))
    assert len(rows) == 3 and {r["state"] for r in rows} == {"sent"}
    assert client.get("/api/v1/ratings/export.csv?from=2026-13-01",
                      headers=headers).status_code == 422  # fmt: skip


def test_an_agents_export_holds_only_their_ratings(app, admin_id):
    agent = add_person(app, "alex@example.com", helpdesk_user_id="agent-7")
    with app.app_context():
        db.session.get(User, agent).connection_id = None
        db.session.commit()
    add_rating(app, 10, "agent-7", "mine")
    add_rating(app, 3, "agent-9", "theirs")
    with app.app_context():
        user = db.session.get(User, agent)
        user.connection_id = db.session.execute(select(Survey.connection_id)).scalar_one()
        db.session.commit()
    client = app.test_client()
    text = client.get("/api/v1/ratings/export.ndjson?agent=agent-9",
                      headers=bearer(token_for(app, agent))).text  # fmt: skip
    assert [json.loads(line)["comment"] for line in text.splitlines()] == ["mine"]
    # Agents' pages never show customers' addresses; nor do their tokens.
    assert [json.loads(line)["requester_email"] for line in text.splitlines()] == [None]
    admin_text = client.get(
        "/api/v1/ratings/export.ndjson", headers=bearer(token_for(app, admin_id))
    ).text
    assert all(json.loads(line)["requester_email"] for line in admin_text.splitlines())
    assert count(app, Rating) == 2


def test_stats_by_agent_day_and_survey_and_an_agents_own(app, admin_id):
    for value, agent in [(10, "a1"), (9, "a1"), (0, "a2"), (10, "a2")]:
        add_rating(app, value, agent)
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    with app.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
    by_agent = client.get(f"/api/v1/stats?survey={survey_id}&by=agent", headers=headers).json
    scores = {row["key"]: (row["value"], row["n"]) for row in by_agent["series"]}
    assert scores == {"a1": (100.0, 2), "a2": (0.0, 2)}
    assert by_agent["scores"][0]["value"] == 50.0 and by_agent["funnel"]["stages"]
    by_day = client.get(f"/api/v1/stats?survey={survey_id}&by=day", headers=headers).json
    assert sum(row["n"] for row in by_day["series"]) == 4
    by_survey = client.get("/api/v1/stats?metric=nps&by=survey", headers=headers).json
    assert [(row["key"], row["n"]) for row in by_survey["series"]] == [(str(survey_id), 4)]
    bad = client.get(f"/api/v1/stats?survey={survey_id}&by=survey", headers=headers)
    assert bad.status_code == 422
    agent = add_person(app, "alex@example.com", helpdesk_user_id="a1")
    mine = client.get(f"/api/v1/stats?survey={survey_id}&by=agent",
                      headers=bearer(token_for(app, agent))).json  # fmt: skip
    assert [(row["key"], row["n"]) for row in mine["series"]] == [("a1", 2)]
    assert mine["scores"][0]["n"] == 2 and mine["funnel"] is None
