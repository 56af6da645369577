"""The Webhooks pages: admins only, the secret shown once, the address guard, no 5xx."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hub.extensions import db
from hub.webhooks.models import WebhookMessage
from hub.webhooks.models import WebhookSubscription
from tests.web.conftest import csrf_of
from tests.webhooks.conftest import send_all


def create(client, **fields):
    page = client.get("/webhooks/new")
    assert page.status_code == 200
    data = {"csrf_token": csrf_of(page.text), "events": ["rating.created"], **fields}
    return client.post("/webhooks/new", data=data)


def only_subscription(app) -> WebhookSubscription:
    with app.app_context():
        (row,) = db.session.execute(select(WebhookSubscription)).scalars().all()
        db.session.expunge(row)
        return row


def test_agents_may_not_see_webhooks(agent):
    assert agent.get("/webhooks").status_code == 403
    assert agent.get("/webhooks/new").status_code == 403


def test_the_secret_is_shown_once_and_stored_encrypted(app, admin, receiver):
    created = create(
        admin,
        url=receiver.url + "/in",
        events=["rating.created", "comment.created"],
        metric="nps",
        score_group="detractor",
        description="Detractor alerts",
        format="slack",
    )
    assert created.status_code == 200
    assert created.headers["Cache-Control"] == "no-store"  # the secret stays in no cache
    secret = created.text.split('<code tabindex="0" style="overflow-wrap:anywhere">')[1]
    secret = secret.split("</code>")[0]
    assert secret.startswith("whsec_") and len(secret) > 40
    row = only_subscription(app)
    assert secret not in row.secret_encrypted
    with app.app_context():
        assert db.session.get(WebhookSubscription, row.id).get_secret() == secret
    listing = admin.get("/webhooks").text
    detail = admin.get(f"/webhooks/{row.id}").text
    for page in (listing, detail):
        assert secret not in page
        assert receiver.url + "/in" in page
    assert "detractors only" in listing and "Slack" in listing and "Active" in listing
    assert "rating.created, comment.created" in listing
    assert "Webhooks</a>" in listing  # the menu entry


def test_disable_enable_test_event_and_delete(app, admin, receiver):
    create(admin, url=receiver.url)
    row = only_subscription(app)
    page = admin.get(f"/webhooks/{row.id}")
    token = csrf_of(page.text)
    assert "No attempt yet." in page.text

    tested = admin.post(f"/webhooks/{row.id}/test", data={"csrf_token": token})
    assert tested.status_code == 302
    assert send_all(app) == ["done"]
    (got,) = receiver.requests
    assert got.json["type"] == "webhook.test"
    page = admin.get(f"/webhooks/{row.id}").text
    assert "webhook.test" in page and "HTTP 200" in page

    admin.post(f"/webhooks/{row.id}/disable", data={"csrf_token": token})
    assert not only_subscription(app).active
    listing = admin.get("/webhooks").text
    assert "Disabled" in listing and "Disabled by an admin." in listing
    admin.post(f"/webhooks/{row.id}/test", data={"csrf_token": token})
    with app.app_context():
        assert db.session.execute(select(WebhookMessage)).scalars().all()[-1].state == "done"
    admin.post(f"/webhooks/{row.id}/enable", data={"csrf_token": token})
    assert only_subscription(app).active

    deleted = admin.post(f"/webhooks/{row.id}/delete", data={"csrf_token": token})
    assert deleted.status_code == 302
    with app.app_context():
        assert db.session.execute(select(WebhookSubscription)).scalars().all() == []
    assert admin.get(f"/webhooks/{row.id}").status_code == 404


def test_changes_need_the_csrf_token(app, admin, receiver):
    create(admin, url=receiver.url)
    row = only_subscription(app)
    assert admin.post(f"/webhooks/{row.id}/delete").status_code == 400
    assert only_subscription(app).id == row.id


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/", "loopback"),
        ("http://localhost:8080/", "loopback"),
        ("http://192.168.1.20/", "private"),
        ("http://[::ffff:10.0.0.1]/", "private"),
    ],
)
def test_internal_addresses_are_refused_with_a_clear_message(app, admin, url, words):
    refused = create(admin, url=url)
    assert refused.status_code == 422
    assert "The hub does not call" in refused.text and words in refused.text
    assert "HUB_ALLOWED_HELPDESK_URLS" in refused.text
    with app.app_context():
        assert db.session.execute(select(WebhookSubscription)).scalars().all() == []


def test_an_allow_listed_internal_address_is_accepted(app, admin):
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = ["http://10.0.0.1:8080"]
    assert create(admin, url="http://10.0.0.1:8080/hook").status_code == 200
    assert create(admin, url="http://10.0.0.1:8081/hook").status_code == 422


@pytest.mark.parametrize(
    "fields",
    [
        {"url": ""},
        {"url": "https://" + "a" * 5000 + ".example.com/"},
        {"url": "javascript:alert(1)"},
        {"url": "ftp://93.184.215.14/"},
        {"url": "http://93.184.215.14/\x00"},
        {"url": "http://93.184.215.14/a\r\nX-Injected: 1"},
        {"url": "http://[::1"},
        {"url": "http://93.184.215.14:99999/"},
        {"url": "http://user:pw@93.184.215.14/"},
        {"url": "https://93.184.215.14/", "events": []},
        {"url": "https://93.184.215.14/", "events": ["rating.deleted"]},
        {"url": "https://93.184.215.14/", "survey_id": "99999999999999999999999"},
        {"url": "https://93.184.215.14/", "survey_id": "١٢"},
        {"url": "https://93.184.215.14/", "survey_id": "-1"},
        {"url": "https://93.184.215.14/", "metric": "nope\x00"},
        {"url": "https://93.184.215.14/", "score_group": "detractor"},
        {"url": "https://93.184.215.14/", "metric": "csat", "score_group": "detractor"},
        {"url": "https://93.184.215.14/", "format": "xml"},
        {"url": "https://93.184.215.14/", "description": "x" * 5000},
    ],
)
def test_bad_input_is_refused_without_a_server_error(app, admin, fields):
    answer = create(admin, **fields)
    assert answer.status_code == 422
    assert 'class="field-error"' in answer.text
    with app.app_context():
        assert db.session.execute(select(WebhookSubscription)).scalars().all() == []


def test_a_public_address_is_accepted_without_calling_it(app, admin):
    answer = create(admin, url="https://93.184.215.14/hook", description="Ops\x07 channel")
    assert answer.status_code == 200
    assert only_subscription(app).description == "Ops channel"


@pytest.mark.parametrize("path", ["/webhooks/0", "/webhooks/2147483647", "/webhooks/99999999999"])
def test_unknown_subscriptions_are_404(admin, path):
    assert admin.get(path).status_code == 404
