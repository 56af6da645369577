"""The REST API's first resources: personal tokens (shown once, kept hashed, scoped,
revocable), problem+json errors, surveys and ratings with a cursor, the OpenAPI document."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select

from hub.extensions import db
from hub.models import ApiToken
from hub.models import Delivery
from hub.models import Rating
from hub.models import Role
from hub.models import Survey
from hub.models import User
from hub.tokens import create_token
from tests.conftest import acme_connection
from tests.web.conftest import add_person
from tests.web.conftest import csrf_of
from tests.web.conftest import signed_in


def token_for(app, user_id: int, scope: str = "read") -> str:
    with app.app_context():
        return create_token(db.session.get(User, user_id), "test", scope)[1]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def add_rating(app, value: int, agent: str = "agent-7", comment: str = "") -> int:
    with app.app_context():
        survey = db.session.execute(select(Survey)).scalar()
        if survey is None:
            survey = Survey(connection=acme_connection(), metric="nps", scale=11, name="NPS")
            db.session.add(survey)
            db.session.flush()
        n = db.session.execute(select(Delivery.id)).scalars().all()
        delivery = Delivery(
            survey_id=survey.id, ticket_id=f"t{len(n)}", requester_email=f"c{len(n)}@example.com",
            agent_ref=agent, state="sent",
        )  # fmt: skip
        db.session.add(delivery)
        db.session.flush()
        rating = Rating(
            delivery_id=delivery.id, survey_id=survey.id, agent_ref=agent, value=value,
            scale=11, comment=comment,
        )  # fmt: skip
        db.session.add(rating)
        db.session.commit()
        return rating.id


@pytest.fixture
def admin_id(app):
    return add_person(app, "admin@example.com", Role.ADMIN.value)


def test_a_token_is_shown_once_and_kept_as_a_hash(app, admin_id):
    page = signed_in(app, admin_id)
    form = page.get("/api-tokens").text
    made = page.post(
        "/api-tokens", data={"csrf_token": csrf_of(form), "name": "BI", "scope": "read"}
    )
    token = re.search(r"shub_[A-Za-z0-9]{8}_[A-Za-z0-9_-]{43}", made.text).group(0)
    assert made.headers["Cache-Control"] == "no-store"  # no cache keeps the page
    with app.app_context():
        row = db.session.execute(select(ApiToken)).scalar_one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (row.token_hash, row.prefix, row.name)
    listed = page.get("/api-tokens").text
    assert token not in listed and f"shub_{row.prefix}_" in listed
    client = app.test_client()
    assert client.get("/api/v1/surveys", headers=bearer(token)).status_code == 200
    with app.app_context():
        assert db.session.get(ApiToken, row.id).last_used_at is not None


def test_unknown_malformed_and_revoked_tokens_get_401_as_problems(app, admin_id):
    token = token_for(app, admin_id)
    client = app.test_client()
    for headers in ({}, bearer("shub_nope"), bearer(token[:-1] + "x"), {"Authorization": token}):
        response = client.get("/api/v1/surveys", headers=headers)
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.json["status"] == 401 and "Bearer" in response.json["detail"]
    page = signed_in(app, admin_id)
    with app.app_context():
        token_id = db.session.execute(select(ApiToken.id)).scalar_one()
    page.post(
        f"/api-tokens/{token_id}/revoke", data={"csrf_token": csrf_of(page.get("/api-tokens").text)}
    )
    assert client.get("/api/v1/surveys", headers=bearer(token)).status_code == 401


def test_an_archived_users_token_stops_working(app):
    agent_id = add_person(app, "gone@example.com", helpdesk_user_id="agent-9")
    token = token_for(app, agent_id)
    client = app.test_client()
    assert client.get("/api/v1/ratings", headers=bearer(token)).status_code == 200
    with app.app_context():
        db.session.get(User, agent_id).status = "archived"
        db.session.commit()
    assert client.get("/api/v1/ratings", headers=bearer(token)).status_code == 401


def test_read_tokens_cannot_write_and_write_tokens_can(app, admin_id):
    add_rating(app, 9)
    with app.app_context():
        survey = db.session.execute(select(Survey)).scalar_one()
        survey.active = True
        db.session.commit()
        survey_id = survey.id
    client = app.test_client()
    read = client.post(
        f"/api/v1/surveys/{survey_id}/deactivate", headers=bearer(token_for(app, admin_id))
    )
    assert read.status_code == 403 and read.mimetype == "application/problem+json"
    with app.app_context():
        assert db.session.get(Survey, survey_id).active is True
    write = client.post(
        f"/api/v1/surveys/{survey_id}/deactivate",
        headers=bearer(token_for(app, admin_id, "write")),
    )
    assert write.status_code == 200 and write.json["active"] is False


def test_activation_failure_is_a_409_problem(app, admin_id):
    add_rating(app, 9)  # a survey on a connection without a reachable helpdesk
    with app.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
    response = app.test_client().post(
        f"/api/v1/surveys/{survey_id}/activate",
        headers=bearer(token_for(app, admin_id, "write")),
        json={"lookback_days": 3},
    )
    assert response.status_code == 409, response.text
    assert "not activated" in response.json["detail"]
    bad = app.test_client().post(
        f"/api/v1/surveys/{survey_id}/activate",
        headers=bearer(token_for(app, admin_id, "write")),
        json={"lookback_days": 400},
    )
    assert bad.status_code == 422 and "lookback_days" in bad.json["errors"]


def test_ratings_page_by_cursor_without_shifting_under_inserts(app, admin_id):
    ids = [add_rating(app, v) for v in (10, 9, 3, 7, 8)]
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    first = client.get("/api/v1/ratings?limit=2", headers=headers).json
    assert [r["id"] for r in first["items"]] == ids[:2]
    assert first["items"][0]["group"] == "promoter" and first["items"][2 - 1]["value"] == 9
    add_rating(app, 0)  # a new rating arrives between two pages
    second = client.get(f"/api/v1/ratings?limit=2&cursor={first['next_cursor']}", headers=headers)
    assert [r["id"] for r in second.json["items"]] == ids[2:4]
    detractors = client.get("/api/v1/ratings?group=detractor", headers=headers).json["items"]
    assert [r["value"] for r in detractors] == [3, 0]


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=201", "survey=99999999999", "cursor=zzz", "cursor=" + "a" * 40,
     "from=2026-02-30", "agent=%00", "to=soon"],
)  # fmt: skip
def test_bad_arguments_get_422_with_field_messages(app, admin_id, query):
    response = app.test_client().get(
        f"/api/v1/ratings?{query}", headers=bearer(token_for(app, admin_id))
    )
    assert response.status_code == 422, response.text
    assert response.mimetype == "application/problem+json"
    assert response.json["errors"]


def test_an_agents_token_sees_only_the_agents_ratings(app, admin_id):
    agent_id = add_person(app, "alex@example.com", helpdesk_user_id="agent-7")
    add_rating(app, 10, "agent-7", "for Alex")
    add_rating(app, 2, "agent-9", "not for Alex")
    client = app.test_client()
    token = token_for(app, agent_id)
    mine = client.get("/api/v1/ratings?agent=agent-9", headers=bearer(token)).json["items"]
    assert [r["comment"] for r in mine] == ["for Alex"]
    assert client.get("/api/v1/surveys", headers=bearer(token)).status_code == 403


def test_unknown_api_paths_and_methods_are_problems_and_pages_stay_html(app, admin_id):
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    missing = client.get("/api/v1/surveys/12345", headers=headers)
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    assert client.get("/api/v1/nothing").mimetype == "application/problem+json"
    assert client.delete("/api/v1/ratings", headers=headers).status_code == 405
    assert client.get("/no-such-page").mimetype == "text/html"


def test_the_openapi_document_is_generated_from_the_schemas(app):
    document = app.test_client().get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.")
    assert {"/api/v1/surveys", "/api/v1/ratings"} <= set(document["paths"])
    parameters = {p["name"] for p in document["paths"]["/api/v1/ratings"]["get"]["parameters"]}
    assert {"survey", "metric", "agent", "group", "from", "to", "limit", "cursor"} <= parameters
    assert document["components"]["securitySchemes"]["token"]["scheme"] == "bearer"


def test_stats_equal_the_metric_formula_and_the_funnel_the_table(app, admin_id):
    values = [10, 9, 9, 7, 3, 0]
    for value in values:
        add_rating(app, value)
    with app.app_context():
        survey_id = db.session.execute(select(Survey.id)).scalar_one()
        db.session.add(
            Delivery(survey_id=survey_id, ticket_id="skip-1", state="skipped",
                     skip_reason="wrong channel")
        )  # fmt: skip
        db.session.commit()
        expected = app.extensions["hub"].registry.metrics["nps"].score(values, 11)
    client = app.test_client()
    headers = bearer(token_for(app, admin_id))
    stats = client.get(f"/api/v1/stats?survey={survey_id}", headers=headers).json
    [score] = stats["scores"]
    assert (score["value"], score["n"], score["margin"]) == (
        expected.value,
        expected.n,
        expected.margin,
    )
    assert stats["funnel"]["stages"]["seen"] == len(values) + 1
    assert stats["funnel"]["stages"]["rated"] == len(values)
    assert stats["funnel"]["skipped"]["wrong channel"] == 1
    by_metric = client.get("/api/v1/stats?metric=nps", headers=headers).json
    assert by_metric["scores"][0]["value"] == expected.value and by_metric["funnel"] is None
    empty = client.get("/api/v1/stats?metric=ces", headers=headers).json
    assert empty["scores"][0]["n"] == 0 if empty["scores"] else empty["scores"] == []
    for query in ("", "survey=1&metric=nps", "metric=nope", "survey=999"):
        response = client.get(f"/api/v1/stats?{query}", headers=headers)
        assert response.status_code in (404, 422), query
        assert response.mimetype == "application/problem+json"


def test_each_token_has_its_own_rate_limit(tmp_path, database_url):
    from flask_migrate import upgrade

    from hub.app import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, database_url, HUB_API_RATE_LIMIT="3 per minute"))
    with app.app_context():
        upgrade()
    admin = add_person(app, "admin@example.com", Role.ADMIN.value)
    first, second = token_for(app, admin), token_for(app, admin)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/v1/surveys", headers=bearer(first)).status_code == 200
    limited = client.get("/api/v1/surveys", headers=bearer(first))
    assert limited.status_code == 429 and limited.mimetype == "application/problem+json"
    assert int(limited.headers["Retry-After"]) > 0
    assert client.get("/api/v1/surveys", headers=bearer(second)).status_code == 200
    # Someone copying the second token's public prefix spends no quota of its owner's.
    forged = second[:14] + "x" * 43
    for _ in range(5):
        assert client.get("/api/v1/surveys", headers=bearer(forged)).status_code in (401, 429)
    assert client.get("/api/v1/surveys", headers=bearer(second)).status_code == 200
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
