"""Signed-in test clients: an admin, and agents who see only their own ratings."""

from __future__ import annotations

import re

import pytest

from hub.extensions import db
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from tests.conftest import acme_connection
from tests.kustomer.conftest import sandbox  # noqa: F401  (a fixture for tests/web)


def add_person(app, email: str, role: str = Role.AGENT.value, helpdesk_user_id=None) -> int:
    """An active user (admin or agent) with the password "correct horse battery"; an
    agent belongs to the Acme connection."""
    with app.app_context():
        connection_id = acme_connection().id if helpdesk_user_id else None
        user = User(
            connection_id=connection_id,
            email=email,
            name=email.split("@")[0].title(),
            role=role,
            status=UserStatus.ACTIVE.value,
            helpdesk_user_id=helpdesk_user_id,
        )
        user.set_password("correct horse battery")
        db.session.add(user)
        db.session.commit()
        return user.id


def signed_in(app, user_id: int):
    """A test client whose session belongs to `user_id` (as after a real sign-in)."""
    client = app.test_client()
    with app.app_context():
        user = db.session.get(User, user_id)
        cookie_id = user.get_id()
    with client.session_transaction() as session:
        session["_user_id"] = cookie_id
        session["_fresh"] = True
    return client


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    return re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', html).group(1)


@pytest.fixture
def admin(app):
    """A test client signed in as an admin."""
    return signed_in(app, add_person(app, "admin@example.com", Role.ADMIN.value))


@pytest.fixture
def agent(app):
    """A test client signed in as the agent whose helpdesk id is "agent-7"."""
    return signed_in(app, add_person(app, "alex@example.com", helpdesk_user_id="agent-7"))
