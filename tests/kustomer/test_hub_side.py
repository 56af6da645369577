"""The hub opens a saved Kustomer connection with its secrets, Redis budget and allow-list."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hub.connections import HelpdeskMissing
from hub.connections import open_helpdesk
from hub.extensions import db
from hub.models import Connection
from surveyhub_kustomer.urls import InvalidKustomerUrl


def saved(app, url: str, helpdesk: str = "kustomer") -> Connection:
    connection = Connection(helpdesk=helpdesk, name="Acme", settings={"url": url})
    connection.set_secrets({"api_key": "sandbox-api-key"})
    db.session.add(connection)
    db.session.commit()
    return connection


def test_a_saved_connection_talks_to_the_allowed_sandbox(app, sandbox, redis_client):
    app.config["HUB_ALLOWED_HELPDESK_URLS"] = [sandbox.url]
    with app.app_context():
        kustomer = open_helpdesk(saved(app, sandbox.url))
        assert kustomer.verify().ok
        assert kustomer.client.budget is not None  # shared through Redis
    assert redis_client.keys("surveyhub:kustomer:127.0.0.1:*")  # one budget per org


def test_without_the_allow_list_the_sandbox_url_is_refused(app, sandbox, redis_client):
    with app.app_context(), pytest.raises(InvalidKustomerUrl):
        open_helpdesk(saved(app, sandbox.url))


def test_missing_helpdesk_plugin_is_named(app, redis_client):
    with app.app_context(), pytest.raises(HelpdeskMissing, match="'zendesk'"):
        open_helpdesk(saved(app, "x", helpdesk="zendesk"))


def test_sandbox_command_is_registered():
    from hub.cli import cli
    from hub.registry import Registry

    Registry.load().add_commands(cli)
    result = CliRunner().invoke(cli, ["kustomer-sandbox", "--help"])
    assert result.exit_code == 0
    assert "fake Kustomer org" in result.output


def test_sandbox_command_serves_a_fake_org(subprocess_env, tmp_path):
    import subprocess
    import time

    import requests

    from tests.conftest import free_port

    port = free_port()
    process = subprocess.Popen(
        ["surveyhub", "kustomer-sandbox", "--port", str(port), "--eligible", "3"],
        env=subprocess_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                state = requests.get(f"http://127.0.0.1:{port}/__sandbox/state", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert state.status_code == 200
        token = requests.get(
            f"http://127.0.0.1:{port}/v1/auth/tokens/current",
            headers={"Authorization": "Bearer sandbox-api-key"},
            timeout=5,
        )
        assert token.json()["data"]["attributes"]["name"] == "SurveyHub sandbox key"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert f"HUB_ALLOWED_HELPDESK_URLS=http://127.0.0.1:{port}" in output
