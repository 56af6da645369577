"""CLI commands that run inside the app: admin-link and rotate-secrets."""

from __future__ import annotations

from hub.cli import cli
from hub.crypto import Vault
from hub.extensions import db
from hub.models import Connection
from hub.models import Role
from hub.models import User
from hub.models import UserStatus
from hub.webhooks.models import WebhookSubscription


def test_admin_link_prints_a_working_link_until_an_admin_exists(app, runner):
    result = runner.invoke(cli, ["admin-link"])
    assert result.exit_code == 0
    link = result.output.strip()
    assert link.startswith(app.config["HUB_BASE_URL"] + "/setup/")
    path = link.removeprefix(app.config["HUB_BASE_URL"])
    assert app.test_client().get(path).status_code == 200
    with app.app_context():
        db.session.add(
            User(email="a@example.com", role=Role.ADMIN.value, status=UserStatus.ACTIVE.value)
        )
        db.session.commit()
    again = runner.invoke(cli, ["admin-link"])
    assert again.exit_code == 1
    assert "An admin account exists already" in again.output


def test_rotate_secrets_re_encrypts_under_the_new_key(app, runner):
    old_key = app.config["SECRET_KEY"]
    with app.app_context():
        connection = Connection(helpdesk="kustomer", name="Acme", settings={})
        connection.set_secrets({"api_key": "k-123"})
        hook = WebhookSubscription(url="https://hooks.example.com/in", events=["rating.created"])
        hook.set_secret("whsec_c2VjcmV0")
        db.session.add_all([connection, hook])
        db.session.commit()
        before = connection.secrets_encrypted
        hook_id = hook.id

    new_key = "the-new-secret-key-0123456789"
    app.config.update(SECRET_KEY=new_key, HUB_OLD_SECRET_KEYS=[old_key])
    app.extensions["hub"].vault = Vault(new_key, [old_key])
    result = runner.invoke(cli, ["rotate-secrets"])
    assert result.exit_code == 0, result.output
    assert "Re-encrypted the secrets of 1 connection." in result.output
    with app.app_context():
        after = db.session.get(Connection, connection.id).secrets_encrypted
    assert after != before
    assert Vault(new_key).decrypt(after) == {"api_key": "k-123"}
    with app.app_context():  # a webhook's signing secret too: receivers keep verifying
        hook_secret = db.session.get(WebhookSubscription, hook_id).secret_encrypted
    assert Vault(new_key).decrypt(hook_secret) == {"secret": "whsec_c2VjcmV0"}
