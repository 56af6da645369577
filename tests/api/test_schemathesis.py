"""The API fuzzed from its own OpenAPI document (schemathesis): the live hub over HTTP on
PostgreSQL, with a read-write admin token, a connection to the Kustomer sandbox and
ratings to read. No answer may be a 5xx, break its documented status, content type or
schema, or hold a secret (the helpdesk key, the hub's secret key, a token)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine
from sqlalchemy import text

from hub.app import create_app
from hub.extensions import db
from hub.models import Role
from hub.models import User
from hub.tokens import create_token
from surveyhub_kustomer.sandbox.app import create_sandbox
from surveyhub_kustomer.sandbox.org import seed
from tests.api.test_api import add_rating
from tests.conftest import TEST_SECRET
from tests.conftest import make_config
from tests.conftest import postgres_url
from tests.kustomer.conftest import serve

#: What must never appear in an answer; filled by the fixture.
SECRETS: list[str] = []
#: What every answer is checked for (schemathesis' names).
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
        "ignored_auth",
    )
)


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """The hub served over HTTP (PostgreSQL, Redis), with data to read and a token."""
    sandbox = seed(eligible=3)
    sandbox_server, sandbox_url = serve(create_sandbox(sandbox.org))
    base = postgres_url()
    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    config = make_config(
        tmp_path_factory.mktemp("fuzz"),
        f"{base}{sep}options=-csearch_path%3D{schema}",
        HUB_ALLOWED_HELPDESK_URLS=[sandbox_url],
        HUB_API_RATE_LIMIT="100000 per minute",
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=9,  # invitations fail politely: nothing listens
    )
    app = create_app(config)
    with app.app_context():
        upgrade()
        admin = User(email="admin@example.com", name="Admin", role=Role.ADMIN.value,
                     status="active")  # fmt: skip
        agent = User(email="alex@example.com", name="Alex", status="active",
                     helpdesk_user_id="agent-7")  # fmt: skip
        db.session.add_all([admin, agent])
        db.session.commit()
        token = create_token(admin, "fuzz", "write")[1]
        admin_id = admin.id
    for value in range(11):
        add_rating(app, value, "agent-7", f"comment {value}")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    made = client.post(
        "/api/v1/connections",
        json={"helpdesk": "kustomer", "settings": {"url": sandbox_url, "api_key": sandbox.api_key}},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    SECRETS[:] = [sandbox.api_key, TEST_SECRET, token]
    server, url = serve(app)
    yield {"url": url, "token": token, "app": app, "admin_id": admin_id}
    server.shutdown()
    sandbox_server.shutdown()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    with engine.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.mark.slow
def test_schemathesis_finds_no_5xx_no_broken_schema_and_no_secret(live_api, tmp_path):
    config = tmp_path / "schemathesis.toml"
    config.write_text('headers = { Authorization = "Bearer ${HUB_FUZZ_TOKEN}" }\n')
    har = tmp_path / "run.har"
    env = {**os.environ, "HUB_FUZZ_TOKEN": live_api["token"]}  # not on the command line
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file", str(config),
            "run", f"{live_api['url']}/api/v1/openapi.json",
            "--checks", CHECKS,
            "--max-examples", "15",
            "--seed", "20261130",
            "--generation-database", "none",  # each run alike, no cache in the checkout
            # One worker: Python 3.11.7's ast module keeps its recursion depth per
            # process, and hypothesis parses lambdas' source in each worker thread; two
            # threads parsing at once raise "AST constructor recursion depth mismatch"
            # (CPython gh-106905), one run in six here and in CI.
            "--workers", "1",
            "--report", "har", "--report-har-path", str(har),
            "--no-color",
        ],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-2000:]
    entries = json.loads(har.read_text())["log"]["entries"]
    assert len(entries) > 200  # it did run: every operation, many cases each
    statuses = Counter(entry["response"]["status"] for entry in entries)
    assert not [status for status in statuses if status >= 500], statuses
    assert statuses[200] + statuses[201] > 50, statuses  # real answers, not only refusals
    for entry in entries:
        body = entry["response"].get("content", {}).get("text", "") or ""
        for secret in SECRETS:
            assert secret not in body, f"{entry['request']['url']} answered a secret"
