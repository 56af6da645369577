"""The laptop mail sink and the Outbox page that shows what it caught."""

from __future__ import annotations

import threading
import time

import pytest

from hub.emails import send_survey
from hub.mail import Mailer
from hub.models import Role
from hub.models import UserStatus
from hub.smtp_sink import list_messages
from hub.smtp_sink import serve
from tests.conftest import add_delivery
from tests.conftest import free_port
from tests.test_web import add_user
from tests.test_web import csrf_token


@pytest.fixture
def sink(app, tmp_path):
    folder = tmp_path / "outbox"
    port = free_port()
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(folder, "127.0.0.1", port, stop), daemon=True)
    thread.start()
    time.sleep(0.3)
    app.config.update(SMTP_HOST="127.0.0.1", SMTP_PORT=port, OUTBOX_DIR=str(folder))
    yield folder
    stop.set()
    thread.join(5)


def sign_in(app, client, role):
    add_user(app, email=f"{role}@example.com", role=role, status=UserStatus.ACTIVE.value)
    page = client.get("/login").text
    client.post(
        "/login",
        data={
            "email": f"{role}@example.com",
            "password": "correct horse battery",
            "csrf_token": csrf_token(page),
        },
    )


def test_sink_keeps_what_is_sent_and_the_outbox_shows_it(app, client, sink):
    with app.app_context():
        delivery = add_delivery()
        with Mailer(app.config) as mailer:
            send_survey(delivery, mailer)
    (item,) = list_messages(sink)
    assert item.message["Subject"] == "How did we do?"
    sign_in(app, client, Role.ADMIN.value)
    index = client.get("/outbox/")
    assert index.status_code == 200
    assert "How did we do?" in index.text
    shown = client.get(f"/outbox/{item.name}")
    assert shown.status_code == 200
    assert "srcdoc=" in shown.text and "/r/" in shown.text
    assert "List-Unsubscribe=One-Click" in shown.text


def test_outbox_is_for_admins_only(app, client, sink):
    sign_in(app, client, Role.AGENT.value)
    assert client.get("/outbox/").status_code == 404


def test_outbox_refuses_names_outside_its_folder(app, client, sink):
    sign_in(app, client, Role.ADMIN.value)
    assert client.get("/outbox/..%2Fsecret_key").status_code == 404
    assert client.get("/outbox/nothing.eml").status_code == 404


def test_outbox_is_off_when_real_smtp_is_configured(app, client):
    sign_in(app, client, Role.ADMIN.value)
    assert client.get("/outbox/").status_code == 404
