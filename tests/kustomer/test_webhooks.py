"""Kustomer's outbound webhooks: signatures, duplicates, our own writes, and the sandbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest
import requests
from werkzeug.serving import make_server

from hub import hookimpl
from hub.extensions import db
from hub.models import Connection
from surveyhub_kustomer.sandbox.app import create_sandbox
from surveyhub_kustomer.sandbox.org import seed
from tests.conftest import free_port
from tests.kustomer.conftest import Sandbox
from tests.kustomer.conftest import serve

TOKEN = "webhook-signing-token"


class Resolutions:
    """A throwaway plugin recording `ticket_resolved`."""

    def __init__(self) -> None:
        self.events = []

    @hookimpl
    def ticket_resolved(self, connection, event):
        self.events.append((connection.id, event.ticket_id, event.resolved_at))


@pytest.fixture
def resolutions(app):
    plugin = Resolutions()
    app.extensions["hub"].registry._pm.register(plugin)
    return plugin


@pytest.fixture
def connection_id(app, redis_client):
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Acme", settings={"url": "acme"})
        connection.set_secrets({"api_key": "k", "webhook_token": TOKEN})
        db.session.add(connection)
        db.session.commit()
        return connection.id


def envelope(event_id="evt-1", status_after="done", custom_changed=False):
    changes = {"attributes": {"status": {"op": "replace", "before": "open", "after": status_after}}}
    if custom_changed:
        changes = {"attributes": {"custom": {"op": "replace", "before": {}, "after": {"xNum": 9}}}}
    return {
        "id": event_id,
        "name": "kustomer.conversation.update",
        "org": "o1",
        "orgName": "acme",
        "createdAt": "2026-11-20T10:00:00.100Z",
        "dataId": "conv-1",
        "data": {
            "type": "conversation",
            "id": "conv-1",
            "attributes": {
                "status": "done",
                "lastDone": {"createdAt": "2026-11-20T10:00:00.000Z"},
                "custom": {},
            },
            "relationships": {},
        },
        "changes": changes,
        "meta": {"customChanged": custom_changed},
    }


def post(client, connection_id, body, token=TOKEN, header="X-Kustomer-Webhook-Signature"):
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    signature = hmac.new(token.encode(), raw, hashlib.sha256).hexdigest()
    return client.post(
        f"/hooks/kustomer/{connection_id}",
        data=raw,
        headers={header: signature, "Content-Type": "application/json"},
    )


def test_valid_signature_is_accepted(client, connection_id, resolutions):
    response = post(client, connection_id, envelope())
    assert response.status_code == 200
    assert response.json == {"status": "accepted"}
    ((cid, ticket, resolved_at),) = resolutions.events
    assert (cid, ticket) == (connection_id, "conv-1")
    assert resolved_at.isoformat() == "2026-11-20T10:00:00+00:00"


def test_hook_ticket_resolved(client, connection_id, resolutions):
    post(client, connection_id, envelope("evt-2"))
    assert [event[1] for event in resolutions.events] == ["conv-1"]


def test_bad_or_missing_signature_is_refused(client, connection_id, resolutions):
    assert post(client, connection_id, envelope(), token="wrong").status_code == 401
    unsigned = client.post(f"/hooks/kustomer/{connection_id}", json=envelope())
    assert unsigned.status_code == 401
    assert resolutions.events == []


def test_a_non_ascii_signature_is_refused_not_a_crash(client, connection_id, resolutions):
    response = client.post(
        f"/hooks/kustomer/{connection_id}",
        data=json.dumps(envelope()),
        headers={"X-Kustomer-Webhook-Signature": "é" * 64},
    )
    assert response.status_code == 401


@pytest.mark.parametrize("header", ["x-kustomer-webhook-signature", "X-Kustomer-Signature"])
def test_signature_header_is_found_whatever_its_case(client, connection_id, resolutions, header):
    assert post(client, connection_id, envelope(), header=header).status_code == 200
    assert len(resolutions.events) == 1


def test_duplicate_delivery_is_handled_once(client, connection_id, resolutions):
    first = post(client, connection_id, envelope("evt-9"))
    again = post(client, connection_id, envelope("evt-9"))
    assert (first.json["status"], again.json["status"]) == ("accepted", "duplicate")
    assert len(resolutions.events) == 1


def test_our_own_attribute_writes_are_ignored(client, connection_id, resolutions):
    response = post(client, connection_id, envelope("evt-3", custom_changed=True))
    assert response.json == {"status": "ignored"}
    assert resolutions.events == []


def test_other_status_changes_are_ignored(client, connection_id, resolutions):
    body = envelope("evt-4", status_after="snoozed")
    body["data"]["attributes"]["status"] = "snoozed"
    assert post(client, connection_id, body).json == {"status": "ignored"}


def test_malformed_body_gets_a_clear_answer(client, connection_id, resolutions):
    response = post(client, connection_id, b"{not json")
    assert response.status_code == 400
    assert response.json == {"error": "the body is not JSON"}


def test_unknown_connection(client, redis_client):
    assert post(client, 424242, envelope()).status_code == 404


def test_the_sandbox_delivers_a_signed_webhook_to_the_hub(app, redis_client, resolutions):

    seeded = seed(eligible=1)
    sandbox_server, sandbox_url = serve(create_sandbox(seeded.org))
    hub_port = free_port()
    hub_server = make_server("127.0.0.1", hub_port, app, threaded=True)
    threading.Thread(target=hub_server.serve_forever, daemon=True).start()
    try:
        sandbox = Sandbox(seeded, sandbox_url, None)
        kustomer = sandbox.connector()
        with app.app_context():
            connection = Connection(helpdesk="kustomer", name="Sandbox", settings={})
            db.session.add(connection)
            db.session.commit()
            url = f"http://127.0.0.1:{hub_port}/hooks/kustomer/{connection.id}"
            webhook_id, token = kustomer.register_webhook(url)
            connection.set_secrets({"api_key": seeded.api_key, "webhook_token": token})
            db.session.commit()
            connection_id = connection.id
        conversation = next(
            cid for cid, reason in seeded.skipped.items() if reason == "not resolved"
        )
        requests.post(f"{sandbox_url}/__sandbox/conversations/{conversation}/resolve", timeout=5)
        # Our own note and attribute fire updates too; they must not count as resolutions.
        kustomer.write_back(conversation, "surveyhubNpsScoreNum", 9, "NPS 9/10", "sh:1", False)
        deadline = time.monotonic() + 10
        while not resolutions.events and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert [(e[0], e[1]) for e in resolutions.events] == [(connection_id, conversation)]
        assert kustomer.register_webhook(url) == (webhook_id, token)  # reused, not doubled
        assert len(seeded.org.webhooks) == 1
        kustomer.remove_webhook(webhook_id)
    finally:
        hub_server.shutdown()
        sandbox_server.shutdown()
