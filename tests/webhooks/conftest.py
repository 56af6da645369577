"""A real HTTP receiver for webhooks, and helpers to subscribe, rate and send."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import pytest
from sqlalchemy import select

from hub.extensions import db
from hub.models import Delivery
from hub.models import Survey
from hub.webhooks.events import EVENT_TYPES
from hub.webhooks.models import WebhookMessage
from hub.webhooks.sender import send_message
from hub.webhooks.subscriptions import SubscriptionInput
from hub.webhooks.subscriptions import create_subscription
from tests.conftest import acme_connection
from tests.web.conftest import admin  # noqa: F401  (fixtures for these tests)
from tests.web.conftest import agent  # noqa: F401


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """What the test server got, and the status it answers with."""

    url: str = ""
    status: int = 200
    location: str = ""
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver(app, redis_client):
    """An HTTP server on 127.0.0.1 that records every request; its address is
    allow-listed for the app (the guard refuses loopback otherwise)."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.requests.append(Received(self.path, dict(self.headers), body))
            self.send_response(state.status)
            if state.location:
                self.send_header("Location", state.location)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [
        *app.config["HUB_ALLOWED_HELPDESK_URLS"],
        state.url,
    ]
    yield state
    server.shutdown()
    server.server_close()


def subscribe(app, url: str, **fields) -> tuple[int, str]:
    """A subscription (all events unless given); returns its id and secret."""
    fields.setdefault("events", list(EVENT_TYPES))
    with app.app_context():
        subscription, secret = create_subscription(SubscriptionInput(url=url, **fields))
        return subscription.id, secret


def add_deliveries(count: int, metric: str = "nps", scale: int = 11) -> list[int]:
    """A survey with `count` sent deliveries (needs an app context); returns their ids."""
    survey = Survey(
        connection=acme_connection(),
        metric=metric,
        scale=scale,
        name=f"{metric.upper()} survey",
        settings={"company_name": "Acme"},
    )
    rows = [
        Delivery(
            survey=survey,
            ticket_id=f"conv-{n}",
            requester_email=f"customer{n}@example.com",
            requester_name=f"Customer {n}",
            agent_ref="agent-7",
            state="sent",
        )
        for n in range(count)
    ]
    db.session.add_all(rows)
    db.session.commit()
    return [row.id for row in rows]


def pending_messages() -> list[int]:
    """Ids of messages waiting to be sent (needs an app context)."""
    query = select(WebhookMessage.id).where(WebhookMessage.state == "pending")
    return list(db.session.execute(query.order_by(WebhookMessage.id)).scalars())


def send_all(app, now=None) -> list[str]:
    """Run the send job for every pending message, as a worker would."""
    with app.app_context():
        return [send_message(message_id, now=now) for message_id in pending_messages()]
